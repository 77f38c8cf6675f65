"""KServe v2 / Open Inference Protocol over every model of the manifest (what Triton serves too).

Errors answer `{"error": message}` (see service.core.errors), which tritonclient turns into its exception.
"""

from __future__ import annotations

import zlib
from functools import partial
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict

from service.api.deps import LimiterDep, ModelStateDep, RegistryDep, SettingsDep
from service.api.routes.health import readiness
from service.core.errors import ApiError
from service.inference import LoadedModel, ModelRegistry, UnknownModelError
from service.kserve import EXTENSIONS, HEADER_LENGTH, V2_DTYPES, encode_infer_response, ort_to_v2, parse_infer_request

router = APIRouter(prefix="/v2", tags=["kserve-v2"])

try:
    SERVER_VERSION = version("spine-xray")
except PackageNotFoundError:  # running from a source tree that is not installed
    SERVER_VERSION = "0.0.0"


class V2Error(BaseModel):
    """The protocol's error body (what Triton answers and tritonclient reads)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [{"error": "unknown model 'Ap_Rib'"}]})

    error: str


_V2_ERROR_TEXT = {
    400: "Malformed request, or not ready (readiness endpoints)",
    404: "Unknown model or version",
    413: "Body (or its decompressed form) over SPINE_MAX_UPLOAD_BYTES",
    415: "Content-Encoding other than gzip/deflate",
    503: "Models loading, the model is not servable, or overloaded (Retry-After)",
}


def v2_errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": V2Error, "description": _V2_ERROR_TEXT[status]} for status in statuses}


MODEL_ERRORS = v2_errors(404, 503)
READY_ERRORS = v2_errors(400, 404, 503)
INFER_ERRORS = v2_errors(400, 404, 413, 415, 503)


def _model(registry: ModelRegistry, name: str, model_version: str | None = None) -> LoadedModel:
    if name not in registry.models:
        raise UnknownModelError(f"unknown model {name!r}; models: {', '.join(registry.models)}")
    model = registry.models[name]
    if model_version not in (None, "", model.entry.version):
        raise ApiError(404, "unknown_version", f"model {name!r} has version {model.entry.version!r}, not {model_version!r}")
    return model


def _tensor_meta(model: LoadedModel) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    def shape(dims: list[int | None]) -> list[int]:
        return [-1 if d is None else d for d in dims]

    if model.inputs:  # from the session: the truth
        inputs = [{"name": s.name, "datatype": ort_to_v2(s.datatype), "shape": shape(s.shape)} for s in model.inputs]
        outputs = [{"name": s.name, "datatype": ort_to_v2(s.datatype), "shape": shape(s.shape)} for s in model.outputs]
    else:  # not loadable: what the manifest promises
        e = model.entry
        inputs = [{"name": e.input_name, "datatype": "FP32", "shape": shape(e.input_shape)}]
        outputs = [{"name": e.output_name, "datatype": "FP32", "shape": shape(e.output_shape)}]
    return inputs, outputs


@router.get("", operation_id="v2_server_metadata", summary="Server metadata")
async def server_metadata() -> dict[str, Any]:
    return {"name": "spine-xray", "version": SERVER_VERSION, "extensions": EXTENSIONS}


@router.get("/health/live", operation_id="v2_server_live", summary="Server liveness (200 = live)")
async def server_live() -> dict[str, bool]:
    return {"live": True}


@router.get(
    "/health/ready",
    operation_id="v2_server_ready",
    summary="Server readiness (200 = ready, 400 = not ready)",
    responses=v2_errors(400),
)
async def server_ready(state: ModelStateDep, settings: SettingsDep) -> JSONResponse:
    body = readiness(state, settings)
    # The protocol: readiness is the status code, 200 true and 4xx false (Triton answers 400).
    content: dict[str, Any] = {"ready": body.ready}
    if not body.ready:
        content["error"] = "; ".join(f"{k}: {v}" for k, v in body.reasons.items()) or "not ready"
    return JSONResponse(content, status_code=200 if body.ready else 400)


@router.get("/models/{name}", operation_id="v2_model_metadata", summary="Model metadata", responses=MODEL_ERRORS)
@router.get(
    "/models/{name}/versions/{model_version}",
    operation_id="v2_model_version_metadata",
    summary="Model metadata",
    responses=MODEL_ERRORS,
)
async def model_metadata(registry: RegistryDep, name: str, model_version: str | None = None) -> dict[str, Any]:
    model = _model(registry, name, model_version)
    inputs, outputs = _tensor_meta(model)
    return {"name": name, "versions": [model.entry.version], "platform": "onnxruntime_onnx", "inputs": inputs, "outputs": outputs}


@router.get(
    "/models/{name}/ready",
    operation_id="v2_model_ready",
    summary="Model readiness (200 = ready, 400 = not)",
    responses=READY_ERRORS,
)
@router.get(
    "/models/{name}/versions/{model_version}/ready",
    operation_id="v2_model_version_ready",
    summary="Model readiness",
    responses=READY_ERRORS,
)
async def model_ready(registry: RegistryDep, name: str, model_version: str | None = None) -> JSONResponse:
    model = _model(registry, name, model_version)
    content: dict[str, Any] = {"name": name, "ready": model.servable}
    if not model.servable:
        content["error"] = model.problem or "not loaded"
    return JSONResponse(content, status_code=200 if model.servable else 400)


@router.get(
    "/models/{name}/config",
    operation_id="v2_model_config",
    summary="Model configuration (Triton's JSON form)",
    responses=MODEL_ERRORS,
)
@router.get(
    "/models/{name}/versions/{model_version}/config",
    operation_id="v2_model_version_config",
    summary="Model configuration",
    responses=MODEL_ERRORS,
)
async def model_config(
    registry: RegistryDep, settings: SettingsDep, name: str, model_version: str | None = None
) -> dict[str, Any]:
    model = _model(registry, name, model_version)
    inputs, outputs = _tensor_meta(model)

    def triton(t: dict[str, Any]) -> dict[str, Any]:  # batch dimension implicit, as in config.pbtxt
        return {"name": t["name"], "data_type": f"TYPE_{t['datatype']}", "dims": t["shape"][1:]}

    return {
        "name": name,
        "platform": "onnxruntime_onnx",
        "backend": "onnxruntime",
        "max_batch_size": settings.max_batch_size,
        "input": [triton(t) for t in inputs],
        "output": [triton(t) for t in outputs],
    }


def _decompress(body: bytes, encoding: str | None, limit: int) -> bytes:
    if not encoding or encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise ApiError(415, "unsupported_media_type", f"Content-Encoding {encoding!r} is not supported (gzip, deflate)")
    # Bounded: a small compressed body must not expand past the upload limit.
    decompressor = zlib.decompressobj(wbits=31 if encoding == "gzip" else 15)
    try:
        out = decompressor.decompress(body, limit + 1)
    except zlib.error as exc:
        raise ApiError(400, "bad_request", f"the {encoding} body cannot be decompressed: {exc}") from None
    if len(out) > limit:
        raise ApiError(413, "body_too_large", f"the decompressed body is over the limit of {limit:,} bytes")
    return out


_TENSOR = {
    "type": "object",
    "required": ["name", "datatype", "shape"],
    "properties": {
        "name": {"type": "string"},
        "datatype": {"type": "string", "enum": sorted(V2_DTYPES)},
        "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
        "data": {"description": "Row-major values (nested or flat), unless parameters.binary_data_size is given"},
        "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}},
    },
}
_INFER_REQUEST = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "inputs": {"type": "array", "minItems": 1, "items": _TENSOR},
        "outputs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "name": {"type": "string"},
                    "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}},
                },
            },
        },
        "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
    },
}
_INFER_OPENAPI = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": _INFER_REQUEST,
                "example": {
                    "inputs": [{"name": "input_image", "datatype": "FP32", "shape": [1, 512, 256, 1], "data": [0.0, "…"]}]
                },
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}


@router.post(
    "/models/{name}/infer",
    operation_id="v2_model_infer",
    summary="Inference (JSON or binary tensors)",
    openapi_extra=_INFER_OPENAPI,
    responses=INFER_ERRORS,
)
@router.post(
    "/models/{name}/versions/{model_version}/infer",
    operation_id="v2_model_version_infer",
    summary="Inference on a version",
    openapi_extra=_INFER_OPENAPI,
    responses=INFER_ERRORS,
)
async def model_infer(
    request: Request,
    registry: RegistryDep,
    settings: SettingsDep,
    limiter: LimiterDep,
    name: str,
    model_version: str | None = None,
) -> Response:
    model = _model(registry, name, model_version)
    body = _decompress(await request.body(), request.headers.get("content-encoding"), settings.max_upload_bytes)

    def work() -> tuple[bytes, int | None]:
        infer = parse_infer_request(body, request.headers.get(HEADER_LENGTH), settings.max_batch_size)
        results = registry.run(name, infer.inputs, list(infer.outputs) or None)
        return encode_infer_response(name, model.entry.version, infer, results)

    payload, header_length = await anyio.to_thread.run_sync(partial(work), limiter=limiter)
    if header_length is None:
        return Response(payload, media_type="application/json")
    return Response(payload, media_type="application/octet-stream", headers={HEADER_LENGTH: str(header_length)})
