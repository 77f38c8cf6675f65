"""DICOM out and DICOMweb: POST /dicom/seg, POST /dicom/sr, POST /dicomweb/studies/{StudyInstanceUID}/analyze."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import replace
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import APIRouter, File, Form, Path, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field
from pydicom import Dataset

from service.api.deps import EngineDep, LimiterDep, MetricsDep, SettingsDep
from service.core.errors import ApiError
from service.dicom.analysis import analyze_radiograph, cobb_of, study_label
from service.dicom.dicomweb import DicomwebServer, analyze_study
from service.dicom.seg import build_segmentation
from service.dicom.source import read_dataset
from service.dicom.sr import build_measurement_report
from service.schemas import AggregationName, ErrorBody
from spine_engine.engine import Engine
from spine_engine.study import parse_structures

router = APIRouter(tags=["dicom"])
T = TypeVar("T")

DICOM_MEDIA_TYPE = "application/dicom"
_ERROR_TEXT = {
    400: "Malformed request (e.g. a broken multipart body, too many form fields)",
    404: "Unknown study on the DICOMweb server, or no DICOMweb server configured (SPINE_DICOMWEB_URL unset)",
    413: "Upload over the byte limit, or image over the pixel limit",
    415: "Not a DICOM file, or a DICOM transfer syntax without a decoder",
    422: "Missing or invalid field; not DICOM radiograph (no pixel data, not CR/DX, no AP/LAT view); no radiograph in the study",
    502: "The DICOMweb server cannot be reached, or answered with an error",
    503: "Not ready: a needed model is missing, corrupt, mismatched, or still loading",
    504: "The DICOMweb server did not answer in time (SPINE_DICOMWEB_TIMEOUT_S)",
}
DICOM_BODY = {
    200: {
        "content": {DICOM_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}}},
        "description": "A DICOM Part 10 file",
    }
}
FILE_HELP = "One DICOM radiograph (CR/DX, single frame, Part 10 file)"
VIEW_HELP = "AP or LAT; optional when the DICOM ViewPosition says it"
STRUCTURES_HELP = "Comma-separated subset of the view's structures (case-insensitive); default: what /segment runs"
UID_PATTERN = r"^[0-9]+(\.[0-9]+)*$"


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody, "description": _ERROR_TEXT[status]} for status in statuses}


async def _run(job: Callable[[], T], limiter: LimiterDep) -> T:
    """The blocking work in a worker thread under the inference limiter (refusals are SpineErrors: one handler)."""
    return await anyio.to_thread.run_sync(job, limiter=limiter)


def _dicom_response(ds: Dataset, prefix: str) -> Response:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    headers = {"Content-Disposition": f'attachment; filename="{prefix}-{ds.SOPInstanceUID}.dcm"'}
    return Response(content=buf.getvalue(), media_type=DICOM_MEDIA_TYPE, headers=headers)


def _seg_job(engine: Engine, data: bytes, view: str | None, structures: str | None) -> tuple[Dataset, str]:
    analysis = analyze_radiograph(engine, read_dataset(data), data, view, parse_structures(structures), classify=False)
    return build_segmentation(analysis), analysis.view


def _sr_job(
    engine: Engine, data: bytes, view: str | None, structures: str | None, aggregation: str | None
) -> tuple[Dataset, str]:
    policy = replace(engine.policy, aggregation=aggregation) if aggregation else engine.policy
    analysis = analyze_radiograph(engine, read_dataset(data), data, view, parse_structures(structures), True, policy)
    seg = build_segmentation(analysis)  # not returned: the same UIDs as /dicom/seg's, so the SR's references resolve
    return build_measurement_report([analysis], [seg], study_label([analysis]), cobb_of([analysis])), analysis.view


@router.post(
    "/dicom/seg",
    operation_id="dicom_seg",
    response_class=Response,
    summary="DICOM Segmentation of one DICOM radiograph",
    description=(
        "A binary SEG instance (highdicom) referencing the source study, series and instance: one segment per structure, "
        "SNOMED CT coded, with the model's name, version and sha256; the masks are those /segment returns for the same file."
    ),
    responses={**DICOM_BODY, **_errors(400, 413, 415, 422, 503)},
)
async def dicom_seg(
    engine: EngineDep,
    limiter: LimiterDep,
    metrics: MetricsDep,
    file: Annotated[UploadFile, File(description=FILE_HELP)],
    view: Annotated[str | None, Form(description=VIEW_HELP, max_length=32)] = None,
    structures: Annotated[str | None, Form(description=STRUCTURES_HELP, max_length=512)] = None,
) -> Response:
    data = await file.read()
    seg, analysed_view = await _run(lambda: _seg_job(engine, data, view, structures), limiter)
    metrics.images.labels("dicom_seg", analysed_view).inc()
    return _dicom_response(seg, "seg")


@router.post(
    "/dicom/sr",
    operation_id="dicom_sr",
    response_class=Response,
    summary="DICOM Structured Report (TID 1500) of one DICOM radiograph",
    description=(
        "A Comprehensive SR Measurement Report: the label and its score, each mask's probability of Damaged and finding, "
        "each tied to the source image and to the segment of the SEG that /dicom/seg returns for the same file and options."
    ),
    responses={**DICOM_BODY, **_errors(400, 413, 415, 422, 503)},
)
async def dicom_sr(
    engine: EngineDep,
    limiter: LimiterDep,
    metrics: MetricsDep,
    file: Annotated[UploadFile, File(description=FILE_HELP)],
    view: Annotated[str | None, Form(description=VIEW_HELP, max_length=32)] = None,
    structures: Annotated[str | None, Form(description=STRUCTURES_HELP, max_length=512)] = None,
    aggregation: Annotated[AggregationName | None, Form(description="Override SPINE_AGGREGATION for this request")] = None,
) -> Response:
    data = await file.read()
    sr, analysed_view = await _run(lambda: _sr_job(engine, data, view, structures, aggregation), limiter)
    metrics.images.labels("dicom_sr", analysed_view).inc()
    return _dicom_response(sr, "sr")


class StoredObject(BaseModel):
    sop_class_uid: str
    series_instance_uid: str
    sop_instance_uid: str


class AnalyzedMask(BaseModel):
    structure: str
    segment_number: int
    area_px: int
    model: str


class MaskScore(BaseModel):
    structure: str
    p_normal: float
    p_damaged: float


class AnalyzedImage(BaseModel):
    sop_instance_uid: str
    series_instance_uid: str
    view: str
    seg_sop_instance_uid: str
    masks: list[AnalyzedMask]
    per_mask: list[MaskScore]
    warnings: list[str]


class SkippedObject(BaseModel):
    sop_instance_uid: str
    reason: str
    code: str = Field(description="The error code the API answers for the same object (e.g. not_a_radiograph)")


class AnalyzeResponse(BaseModel):
    study_uid: str
    label: str = Field(description="Normal or Damaged, over every mask of every analysed image")
    score: float = Field(description="Probability of `label` under `aggregation`")
    aggregation: str
    stored: list[StoredObject] = Field(description="The SEG (one per image) and the SR stored back over STOW-RS")
    results: list[AnalyzedImage]
    skipped: list[SkippedObject] = Field(description="Objects of the study not analysed, with the reason")


@router.post(
    "/dicomweb/studies/{study_uid}/analyze",
    operation_id="dicomweb_analyze",
    response_model=AnalyzeResponse,
    summary="Analyse a study on the DICOMweb server (SPINE_DICOMWEB_URL) and store SEG + SR back",
    description=(
        "QIDO-RS lists the study, WADO-RS fetches each CR/DX instance, every AP/LAT radiograph is segmented and scored, "
        "and one SEG per image plus one SR for the study are stored back over STOW-RS. Nothing touches the local disk."
    ),
    responses=_errors(400, 404, 422, 502, 503, 504),
)
async def dicomweb_analyze(
    engine: EngineDep,
    settings: SettingsDep,
    limiter: LimiterDep,
    metrics: MetricsDep,
    study_uid: Annotated[str, Path(description="Study Instance UID", max_length=64, pattern=UID_PATTERN)],
    structures: Annotated[str | None, Form(description=STRUCTURES_HELP, max_length=512)] = None,
    aggregation: Annotated[AggregationName | None, Form(description="Override SPINE_AGGREGATION for this request")] = None,
) -> dict[str, Any]:
    if not settings.dicomweb_url:
        raise ApiError(
            404, "dicomweb_not_configured", "no DICOMweb server is configured: set SPINE_DICOMWEB_URL (docs/deployment.md)"
        )
    server = DicomwebServer.from_settings(settings)
    policy = replace(engine.policy, aggregation=aggregation) if aggregation else engine.policy
    job = lambda: analyze_study(server, engine, study_uid, parse_structures(structures), policy)  # noqa: E731
    result = await _run(job, limiter)
    for image in result["results"]:
        metrics.images.labels("dicomweb_analyze", image["view"]).inc()
    return result
