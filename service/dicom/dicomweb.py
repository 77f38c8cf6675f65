"""DICOMweb round trip of a study: QIDO-RS lists it, WADO-RS fetches its radiographs, STOW-RS stores SEG + SR back.

Everything stays in memory (no local file). Failures of the PACS are `DicomInputError`s: 502 `pacs_unreachable`
or `pacs_error`, 504 `pacs_timeout`, 404 `study_not_found`; a study without an analysable radiograph is a 422
`no_radiographs` that lists why each object was skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
from dicomweb_client.api import DICOMwebClient
from dicomweb_client.session_utils import create_session_from_user_pass
from pydicom import Dataset
from pydicom.errors import InvalidDicomError

from service.dicom.analysis import RadiographAnalysis, analyze_radiograph, cobb_of, study_label
from service.dicom.seg import build_segmentation
from service.dicom.source import DicomInputError, radiograph_problem
from service.dicom.sr import build_measurement_report
from spine_engine import InferenceError, ModelRegistry
from spine_engine.analysis import AnalysisPolicy
from spine_engine.decoding import ImageDecodeError

T = TypeVar("T")


@dataclass(frozen=True)
class DicomwebServer:
    url: str
    username: str | None = None
    password: str | None = None
    timeout_s: float = 30.0

    def client(self) -> DICOMwebClient:
        session = create_session_from_user_pass(self.username, self.password or "") if self.username else requests.Session()
        client = DICOMwebClient(url=self.url, session=session, timeout=self.timeout_s)
        # dicomweb-client retries 5 times with exponential back-off (30 s) by default; the caller of analyze decides.
        client.set_http_retry_params(retry=False)
        return client

    def call(self, what: str, fn: Callable[..., T], *args: Any, not_found: str | None = None, **kwargs: Any) -> T:
        """Run one DICOMweb request; transport and HTTP failures become DicomInputErrors with a clear code."""
        try:
            return fn(*args, **kwargs)
        except requests.exceptions.Timeout as exc:
            raise DicomInputError(
                504, "pacs_timeout", f"the DICOMweb server {self.url} did not answer {what} within {self.timeout_s:g} s"
            ) from exc
        except requests.exceptions.ConnectionError as exc:
            raise DicomInputError(
                502, "pacs_unreachable", f"the DICOMweb server {self.url} cannot be reached ({what}): {exc}"
            ) from exc
        except requests.exceptions.HTTPError as exc:
            status = exc.response.status_code if exc.response is not None else None
            if status == 404 and not_found is not None:
                raise DicomInputError(404, "study_not_found", not_found) from exc
            raise DicomInputError(
                502, "pacs_error", f"the DICOMweb server {self.url} answered {what} with HTTP {status}", pacs_status=status
            ) from exc
        except requests.exceptions.RequestException as exc:
            raise DicomInputError(502, "pacs_error", f"the DICOMweb request ({what}) to {self.url} failed: {exc}") from exc
        except (ValueError, KeyError) as exc:  # an answer dicomweb-client cannot parse (JSON, multipart)
            raise DicomInputError(
                502, "pacs_bad_answer", f"the DICOMweb server {self.url} answered {what} unreadably: {exc}"
            ) from exc


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def _skip_reason(exc: Exception) -> str:
    return getattr(exc, "message", None) or str(exc)


def analyze_study(
    server: DicomwebServer,
    registry: ModelRegistry,
    study_uid: str,
    structures: list[str] | None = None,
    policy: AnalysisPolicy | None = None,
    max_pixels: int = 100_000_000,
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
            skipped.append({"sop_instance_uid": sop_uid, "reason": problem})
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
            skipped.append({"sop_instance_uid": sop_uid, "reason": f"the DICOMweb server sent a part pydicom cannot read: {exc}"})
            continue
        try:
            analysis = analyze_radiograph(registry, source, None, None, structures, max_pixels, True, policy)
            segmentations.append(build_segmentation(analysis))
            analyses.append(analysis)
        except (DicomInputError, ImageDecodeError, InferenceError) as exc:  # e.g. no validated model, no spine found
            skipped.append({"sop_instance_uid": sop_uid, "reason": _skip_reason(exc)})
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
