"""The annotator's masks as a DICOM SEG (segment algorithm type MANUAL) of the DICOM film they were drawn on,
stored over STOW-RS beside it when SPINE_DICOMWEB_URL is set (POST /annotations).

A SEG references its source image by its DICOM UIDs, so only a DICOM film gets one: a PNG/JPEG/TIFF film has no
instance to reference, and the sidecar says so instead.
"""

from __future__ import annotations

from typing import Any

import highdicom as hd
import numpy as np
from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from service.dicom.dicomweb import DicomwebServer
from service.dicom.seg import CATEGORY, MANUFACTURER, MODEL_NAME, REGION, SOFTWARE_VERSION, structure_coding
from service.dicom.source import DicomInputError, copied_from_source, read_dataset

ANNOTATION_SERIES_NUMBER = 9403


def _description(structure: str, annotator: str, provenance: dict[str, Any]) -> str:
    text = f"{structure_coding(structure).shows}; drawn by {annotator}"
    pre = provenance.get("pre_annotation") or {}
    if pre.get("source") == "model" and pre.get("model"):
        text += f", edited from the mask of model {pre['model']} {pre.get('model_version') or ''}".rstrip()
    return text[:1024]


def build_manual_segmentation(
    source: Dataset, masks: dict[str, np.ndarray], view: str, annotator: str, provenance: dict[str, dict[str, Any]]
) -> hd.seg.Segmentation:
    """One binary SEG of `source`, one MANUAL segment per annotated structure (frame n = segment n)."""
    structures = list(masks)
    descriptions = []
    for number, structure in enumerate(structures, start=1):
        coding = structure_coding(structure)
        description = hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=structure,
            segmented_property_category=CATEGORY,
            segmented_property_type=coding.property_type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            anatomic_regions=[REGION],
        )
        description.SegmentDescription = _description(structure, annotator, provenance.get(structure, {}))
        descriptions.append(description)
    pixels = np.stack([masks[s].astype(bool) for s in structures], axis=-1)[np.newaxis]
    if pixels.shape[1:3] != (int(source.Rows), int(source.Columns)):
        raise ValueError(f"masks are {pixels.shape[1:3]}, the film {source.Rows}x{source.Columns}")
    with copied_from_source("Segmentation"):
        seg = hd.seg.Segmentation(
            source_images=[source],
            pixel_array=pixels,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=generate_uid(),
            series_number=ANNOTATION_SERIES_NUMBER,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer=MANUFACTURER,
            manufacturer_model_name=MODEL_NAME,
            software_versions=SOFTWARE_VERSION,
            device_serial_number=MANUFACTURER,
            content_description=f"annotation, {view} view",
            content_label="ANNOTATION",
            omit_empty_frames=False,
            transfer_syntax_uid=ExplicitVRLittleEndian,
        )
    seg.SeriesDescription = "spine-xray annotation (manual)"
    if "PatientOrientation" not in seg:
        seg.PatientOrientation = source.get("PatientOrientation", "")
    return seg


def store_annotation_seg(
    server: DicomwebServer,
    film: bytes,
    film_format: str,
    masks: dict[str, np.ndarray],
    view: str,
    annotator: str,
    provenance: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """STOW-RS the SEG; -> what the sidecar records. Failures of the PACS raise DicomInputError (502/504)."""
    if film_format != "DICOM":
        return {"stored": False, "reason": f"the film is {film_format}, not DICOM: a SEG references a DICOM image"}
    source = read_dataset(film)
    seg = build_manual_segmentation(source, masks, view, annotator, provenance)
    seg.preamble = b"\0" * 128  # stored as a Part 10 file, as the analyze route stores its objects
    answer = server.call("STOW-RS of the annotation SEG", server.client().store_instances, [seg])
    failed = answer.get("FailedSOPSequence") if answer else None
    if failed:
        raise DicomInputError(502, "pacs_error", f"the DICOMweb server {server.url} refused the annotation SEG")
    return {
        "stored": True,
        "url": server.url,
        "study_instance_uid": str(seg.StudyInstanceUID),
        "series_instance_uid": str(seg.SeriesInstanceUID),
        "sop_instance_uid": str(seg.SOPInstanceUID),
        "referenced_sop_instance_uid": str(source.SOPInstanceUID),
    }
