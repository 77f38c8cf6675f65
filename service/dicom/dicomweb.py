"""DICOMweb round trip of a study: QIDO-RS lists it, WADO-RS fetches its radiographs, STOW-RS stores SEG + SR back.

Everything stays in memory (no local file). Failures of the PACS are `DicomInputError`s: 502 `pacs_unreachable`
or `pacs_error`, 504 `pacs_timeout`, 404 `study_not_found`; a study without an analysable radiograph is a 422
`no_radiographs` that lists why each object was skipped.
"""

from __future__ import annotations

from typing import Any

from pydicom import Dataset
from pydicom.errors import InvalidDicomError

from service.dicom.analysis import RadiographAnalysis, analyze_radiograph, cobb_of, study_label
from service.dicom.seg import build_segmentation
from service.dicom.source import radiograph_problem
from service.dicom.sr import build_measurement_report
from spine_engine.engine import Engine
from spine_engine.errors import DicomInputError, SpineError
from spine_engine.pacs import DicomwebServer
from spine_engine.policy import AnalysisPolicy

__all__ = ["DicomwebServer", "analyze_study", "image_result"]  # DicomwebServer: the client lives in spine_engine.pacs


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def analyze_study(
    server: DicomwebServer,
    engine: Engine,
    study_uid: str,
    structures: tuple[str, ...] | None = None,
    policy: AnalysisPolicy | None = None,
) -> dict[str, Any]:
    """Analyse every AP/LAT radiograph of a study and store one SEG per image and one SR for the study."""
    client = server.client()
    not_found = f"the DICOMweb server has no study {study_uid}"
    matches = server.call(
        "a QIDO-RS search for the study's instances",
        client.search_for_instances,
        study_instance_uid=study_uid,
        fields=["00080060", "00080016", "0020000E"],  # Modality, SOP Class UID, Series Instance UID
        get_remaining=True,
        not_found=not_found,
    )
    if not matches:
        raise DicomInputError(404, "study_not_found", not_found)

    analyses: list[RadiographAnalysis] = []
    segmentations: list[Dataset] = []  # segmentations[i] is the SEG of analyses[i]
    skipped: list[dict[str, str]] = []
    for match in matches:
        meta = Dataset.from_json(match)
        sop_uid, series_uid = _text(meta, "SOPInstanceUID"), _text(meta, "SeriesInstanceUID")
        # A server that leaves Modality out of the QIDO answer: fetch the instance and let its header decide.
        modality = _text(meta, "Modality")
        problem = radiograph_problem(modality, _text(meta, "SOPClassUID")) if modality else None
        if problem is not None:
            skipped.append({"sop_instance_uid": sop_uid, "reason": problem, "code": "not_a_radiograph"})
            continue
        try:
            source = server.call(
                f"a WADO-RS retrieval of instance {sop_uid}",
                client.retrieve_instance,
                study_uid,
                series_uid,
                sop_uid,
                not_found=not_found,
            )
        except InvalidDicomError as exc:  # e.g. stored without the Part 10 preamble: pydicom will not guess
            reason = f"the DICOMweb server sent a part pydicom cannot read: {exc}"
            skipped.append({"sop_instance_uid": sop_uid, "reason": reason, "code": "corrupt_image"})
            continue
        try:
            analysis = analyze_radiograph(engine, source, None, None, structures, True, policy)
            segmentations.append(build_segmentation(analysis))
            analyses.append(analysis)
        except SpineError as exc:  # e.g. no validated model, no spine found: the message every route gives
            skipped.append({"sop_instance_uid": sop_uid, "reason": exc.message, "code": exc.code})
    if not analyses:
        raise DicomInputError(
            422, "no_radiographs", f"study {study_uid} has no AP or lateral radiograph this service can analyse", skipped=skipped
        )

    label = study_label(analyses)
    report = build_measurement_report(analyses, segmentations, label, cobb_of(analyses))
    outgoing: list[Dataset] = [*segmentations, report]
    for ds in outgoing:
        # dicomweb-client writes each part with pydicom's dcmwrite, which (pydicom 3) writes the 128-byte preamble and
        # 'DICM' only for a dataset that has a preamble: without them the PACS would store and serve non-Part-10 data.
        ds.preamble = b"\0" * 128
    answer = server.call("a STOW-RS store of the results", client.store_instances, outgoing, study_instance_uid=study_uid)
    failed = [str(item.get("ReferencedSOPInstanceUID", "")) for item in answer.get("FailedSOPSequence", [])]
    if failed:
        raise DicomInputError(
            502, "pacs_store_failed", f"the DICOMweb server refused {len(failed)} of our objects", failed=failed
        )
    return {
        "study_uid": study_uid,
        "label": label.label,
        "score": round(label.score, 6),
        "aggregation": label.aggregation,
        "stored": [
            {
                "sop_class_uid": str(d.SOPClassUID),
                "series_instance_uid": str(d.SeriesInstanceUID),
                "sop_instance_uid": str(d.SOPInstanceUID),
            }
            for d in outgoing
        ],
        "results": [image_result(a, s) for a, s in zip(analyses, segmentations, strict=True)],
        "skipped": skipped,
    }


def image_result(analysis: RadiographAnalysis, seg: Dataset) -> dict[str, Any]:
    numbers = {str(item.SegmentLabel): int(item.SegmentNumber) for item in seg.SegmentSequence}
    return {
        "sop_instance_uid": analysis.sop_instance_uid,
        "series_instance_uid": str(analysis.source.SeriesInstanceUID),
        "view": analysis.view,
        "seg_sop_instance_uid": str(seg.SOPInstanceUID),
        "masks": [
            {"structure": s, "segment_number": numbers[s], "area_px": int(m.sum()), "model": analysis.models[s][0].name}
            for s, m in analysis.masks.items()
        ],
        "per_mask": [
            {"structure": s, "p_normal": round(p[0], 6), "p_damaged": round(p[1], 6)} for s, p in analysis.per_mask.items()
        ],
        "warnings": analysis.warnings,
    }
