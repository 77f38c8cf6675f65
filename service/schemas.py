"""Response bodies of the HTTP API, with the examples shown in /docs (the answers' fields: spine_engine/schemas.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from spine_engine import schemas as answers
from spine_engine.schemas import AggregationName, MaskFormat  # noqa: F401  (the routes' form fields)

# Real responses of the committed models (scripts/api_examples.py writes them; the README shows the same).
_EXAMPLES_FILE = Path(__file__).with_name("api_examples.json")


def _examples(name: str) -> list[dict[str, Any]]:
    if not _EXAMPLES_FILE.is_file():
        return []
    return [json.loads(_EXAMPLES_FILE.read_text())[name]]


class SegmentResponse(answers.SegmentResponse):
    model_config = ConfigDict(json_schema_extra={"examples": _examples("segment")})


class ClassifyResponse(answers.ClassifyResponse):
    model_config = ConfigDict(json_schema_extra={"examples": _examples("classify")})


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
                    "models_ready": 11,
                    "models_total": 11,
                    "reasons": {},
                },
                {
                    "status": "not_ready",
                    "ready": False,
                    "execution_provider": "CPUExecutionProvider",
                    "requested_providers": ["CUDAExecutionProvider", "CPUExecutionProvider"],
                    "require_gpu": True,
                    "models_ready": 0,
                    "models_total": 11,
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

    code: str = Field(description="Stable machine-readable error kind (every code: the table in this document's description)")
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
