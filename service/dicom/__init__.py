"""DICOM out (Segmentation, TID 1500 Structured Report) and the DICOMweb round trip with a PACS.

    source.read_dataset / check_radiograph   -> the source radiograph, or a DicomInputError (HTTP status + code)
    analysis.analyze_radiograph              -> masks and scores from the service's own pipeline
    seg.build_segmentation                   -> highdicom Segmentation
    sr.build_measurement_report              -> highdicom Comprehensive SR (TID 1500), Cobb extension point
    dicomweb.analyze_study                   -> QIDO/WADO-RS in, SEG + SR out over STOW-RS

No web framework here; service/api/routes/dicom.py is the HTTP side.
"""
