"""Response bodies of the HTTP API (the contract of issue 3), with the examples shown in /docs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MaskFormat = Literal["png", "rle"]
AggregationName = Literal["mean", "max_score", "cobb"]

# Real responses of the committed models (scripts/api_examples.py writes them; the README shows the same).
_EXAMPLES_FILE = Path(__file__).with_name("api_examples.json")


def _examples(name: str) -> list[dict[str, Any]]:
    if not _EXAMPLES_FILE.is_file():
        return []
    return [json.loads(_EXAMPLES_FILE.read_text())[name]]


class RleMask(BaseModel):
    """COCO uncompressed RLE: column-major run lengths starting with background; `pycocotools.mask.frPyObjects` reads it."""

    size: list[int] = Field(description="[height, width]")
    counts: list[int]


class MaskOut(BaseModel):
    structure: str
    encoding: MaskFormat
    data: str | RleMask = Field(description="base64 PNG (1-bit, original size) or COCO uncompressed RLE")
    area_px: int = Field(description="Mask pixels at the original size")
    bbox: list[int] | None = Field(description="[x, y, width, height] of the mask, null when empty")


class ModelRef(BaseModel):
    name: str
    version: str
    sha256: str = Field(description="Of the file served (the int8 variant's when SPINE_PRECISION=int8 serves one)")
    validated: bool
    precision: str = Field("fp32", description="fp32, or int8 when the model's quantized variant is served")


class LegendEntry(BaseModel):
    structure: str
    color: str = Field(description="#rrggbb, as drawn in the overlay and the viewer")
    validated: bool = Field(description="False: a demonstration model's mask (dashed outline, no fill)")


class Excluded(BaseModel):
    view: Literal["AP", "LAT"]
    structure: str | None = Field(description="null: the whole view")
    reason: str


class VertebraOut(BaseModel):
    level: str = Field(description="T1..L5")
    corners: list[list[float]] = Field(
        description="[[x, y] x 4] at original pixels: top-left, top-right, bottom-left, bottom-right"
    )
    confidence: float = Field(description="0..1: how well the mask's component fits one vertebral body (docs/measurement.md)")


class CurveOut(BaseModel):
    name: str = Field(description="proximal_thoracic | main_thoracic | thoracolumbar_lumbar")
    upper_end: str
    lower_end: str
    apex: str
    angle_deg: float
    end_confidence: float | None = Field(None, description="The lower of its end vertebrae's confidences")
    reliable: bool | None = Field(
        None, description="false: an end vertebra of this curve is uncertain (end_confidence under 0.8), its angle may be off"
    )


class CobbOut(BaseModel):
    angles_deg: list[float] = Field(description="[proximal-thoracic, main-thoracic, thoracolumbar/lumbar], AASCE-2019 method")
    aasce_angles_deg: list[float] = Field(
        default_factory=list,
        description="The same three angles in the order the AASCE-2019 organisers compute them (largest first), as in "
        "their angles.csv: compare with it directly",
    )
    max_deg: float
    curve: Literal["C", "S"]
    curves: list[CurveOut]
    severity: Literal["none", "mild", "moderate", "severe"] = Field(description="by the 10 / 25 / 40 degree lines")
    reliable: bool | None = Field(
        None,
        description="The main (largest) curve's `reliable`: false when one of its end vertebrae is uncertain "
        "(the cobb rule then decides nothing)",
    )


class RuleOut(BaseModel):
    label: Literal["Normal", "Damaged"]
    p_damaged: float | None = Field(None, description="Classifier rules: calibrated probability of Damaged")
    max_deg: float | None = Field(None, description="cobb rule: the measured largest Cobb angle")
    cutoff: float | None = Field(None, description="p_damaged cut-off, or degrees for the cobb rule")


class SegmentResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": _examples("segment")})

    view: Literal["AP", "LAT"]
    width: int
    height: int
    format: str = Field(description="Decoded file format (PNG, JPEG, TIFF, DICOM)")
    masks: list[MaskOut]
    overlay_png: str | None = Field(None, description="base64 PNG of the radiograph with coloured masks (overlay=true)")
    legend: list[LegendEntry] = Field(default_factory=list, description="Colour of each returned structure")
    excluded: list[Excluded] = Field(default_factory=list, description="Structures not run, and why")
    vertebrae: list[VertebraOut] = Field(default_factory=list, description="AP: T1..L5 found on the vertebra mask")
    cobb: CobbOut | None = Field(None, description="AP: Cobb angles, null when the 17 vertebrae were not all found")
    models: list[ModelRef]
    execution_provider: str = Field(description="onnxruntime provider the sessions actually run on")
    timings_ms: dict[str, float] = Field(
        description="decode, preprocess, inference, postprocess, encode, total; refinement when a second stage ran"
    )
    warnings: list[str] = Field(default_factory=list)


class PerMaskScore(BaseModel):
    structure: str
    view: Literal["AP", "LAT"]
    p_normal: float = Field(description="1 - p_damaged")
    p_damaged: float = Field(description="Calibrated probability of Damaged (the classifier's map in GET /models)")
    p_damaged_raw: float = Field(description="The classifier's own softmax output, before calibration")
    validated: bool = Field(description="False: a demonstration model's mask")
    decides: bool = Field(description="Whether this score entered the label")


class ViewMasks(BaseModel):
    view: Literal["AP", "LAT"]
    width: int
    height: int
    format: str
    masks: list[MaskOut] = Field(description="Empty when include_masks=false")


class ClassifyResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": _examples("classify")})

    label: Literal["Normal", "Damaged"]
    score: float = Field(description="Calibrated probability of `label` (from p_damaged)")
    p_damaged: float = Field(description="Calibrated probability of Damaged: mean over the masks in `decided_by`")
    threshold: float = Field(description="p_damaged at or above which the classifier rules say Damaged")
    aggregation: AggregationName = Field(description="The rule that decided `label`")
    decided_by: list[str] = Field(description="Structures whose score (or, for the cobb rule, measurement) decided")
    rules: dict[str, RuleOut] = Field(description="Every rule's label on this study, the deciding one included")
    excluded: list[Excluded] = Field(default_factory=list, description="Views and structures left out, and why")
    per_mask: list[PerMaskScore]
    vertebrae: list[VertebraOut] = Field(default_factory=list, description="AP: T1..L5 found on the vertebra mask")
    cobb: CobbOut | None = Field(None, description="AP: Cobb angles, null when the 17 vertebrae were not all found")
    views: list[ViewMasks]
    models: list[ModelRef]
    execution_provider: str
    timings_ms: dict[str, float] = Field(description="as /segment's, plus classification")
    warnings: list[str] = Field(default_factory=list)


class LiveResponse(BaseModel):
    status: Literal["alive"] = "alive"


class ReadyResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "status": "ready",
                    "ready": True,
                    "execution_provider": "CUDAExecutionProvider",
                    "requested_providers": ["CUDAExecutionProvider", "CPUExecutionProvider"],
                    "require_gpu": False,
                    "models_ready": 10,
                    "models_total": 10,
                    "reasons": {},
                },
                {
                    "status": "not_ready",
                    "ready": False,
                    "execution_provider": "CPUExecutionProvider",
                    "requested_providers": ["CUDAExecutionProvider", "CPUExecutionProvider"],
                    "require_gpu": True,
                    "models_ready": 0,
                    "models_total": 10,
                    "reasons": {"Ap_Vertebra": "require_gpu is set but the session runs on CPUExecutionProvider"},
                },
            ]
        }
    )

    status: Literal["ready", "not_ready", "loading"]
    ready: bool
    execution_provider: str
    requested_providers: list[str]
    require_gpu: bool
    models_ready: int
    models_total: int
    reasons: dict[str, str] = Field(default_factory=dict, description="Why not ready, by model name (or 'manifest')")


class ModelInfo(BaseModel):
    model_config = ConfigDict(extra="allow")  # new manifest fields pass through

    name: str
    kind: str
    structure: str | None
    view: str | None
    version: str
    file: str
    sha256: str
    input_name: str
    output_name: str
    input_shape: list[int | None]
    output_shape: list[int | None]
    threshold: float | None
    classes: list[str] | None
    architecture: str
    parameters: int
    opset: int
    preprocessing: dict[str, Any]
    training_data: str
    split: str
    epochs: int
    training_time_s: float | None
    trained_on: str | None
    metrics: dict[str, Any]
    parity_max_abs_diff: float | None
    validated: bool
    notes: str
    ready: bool = Field(description="Loaded, matching its sha256, warmed up")
    provider: str | None = Field(description="onnxruntime provider of this model's session")
    precision: str = Field("fp32", description="Of the file served: fp32, or int8 (its variant in `variants`)")
    problem: str | None = None


class ModelsResponse(BaseModel):
    ready: bool
    execution_provider: str
    manifest_created: str | None
    models: list[ModelInfo]


class ErrorBody(BaseModel):
    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {"code": "unknown_structure", "detail": "unknown structure 'Ap_Rib'; AP structures: …", "request_id": "9f1c…"}
            ]
        },
    )

    code: str = Field(description="Stable machine-readable error kind")
    detail: str = Field(description="What was wrong, for a person")
    request_id: str | None = None


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries for the error statuses a route can answer."""
    descriptions = {
        400: "Malformed request",
        404: "Unknown model",
        413: "Upload over the byte limit, or image over the pixel limit",
        415: "Not an image format the service reads (or a DICOM transfer syntax without a decoder)",
        422: "Missing or invalid field, unknown view or structure, empty/corrupt/truncated image",
        503: "Not ready: a needed model is missing, corrupt, mismatched, or still loading",
    }
    return {status: {"model": ErrorBody, "description": descriptions[status]} for status in statuses}
