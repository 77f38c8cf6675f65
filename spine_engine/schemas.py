"""The answers' shape: the bodies /segment and /classify return, the rows spine-batch flattens (pydantic only).

The service adds the real examples shown in /docs (service/schemas.py); the fields are defined here once.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

MaskFormat = Literal["png", "rle"]
AggregationName = Literal["measured", "mean", "max_score", "cobb"]


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
    confidence: float = Field(
        description="0..1: landmark model: its heatmap peak over the model's median validation peak (low where the level "
        "was interpolated); mask geometry: how well the mask's component fits one vertebral body (docs/measurement.md)"
    )
    detected: bool = Field(True, description="false: placed between (or beyond) seen neighbours, not seen itself")


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
    p_damaged: float | None = Field(
        None,
        description="Classifier rules: calibrated probability of Damaged; cobb and measured rules: the probability that "
        "the true largest angle reaches the cut-off, given the measured one and the measurement's validation error",
    )
    max_deg: float | None = Field(None, description="cobb and measured rules: the measured largest Cobb angle")
    cutoff: float | None = Field(None, description="p_damaged cut-off, or degrees for the cobb and measured rules")


class SegmentResponse(BaseModel):
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
    label: Literal["Normal", "Damaged"]
    score: float = Field(description="Calibrated probability of `label` (from p_damaged)")
    p_damaged: float = Field(
        description="Probability of Damaged under the deciding rule: the classifier's calibrated mean over the masks "
        "in `decided_by`, or for the measured rule from the measured largest angle"
    )
    threshold: float = Field(description="p_damaged at or above which the deciding rule says Damaged")
    aggregation: AggregationName = Field(
        description="The rule that decided `label` (the measured rule on a film that was not measured: mean)"
    )
    decided_by: list[str] = Field(description="Structures whose score (or, for the cobb and measured rules, measurement) decided")
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
