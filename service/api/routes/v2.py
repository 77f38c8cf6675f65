"""KServe v2 / Open Inference Protocol over every model of the manifest (what Triton serves too).

Errors answer `{"error": message}` (see service.core.errors), which tritonclient turns into its exception.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from service.api.deps import LimiterDep, ModelStateDep, RegistryDep, SettingsDep
from service.core.errors import ApiError
from service.kserve import (
    EXTENSIONS,
    HEADER_LENGTH,
    INFER_OPENAPI,
    SERVER_VERSION,
    decompress,
    encode_infer_response,
    parse_infer_request,
    tensor_metadata,
    triton_config,
    v2_errors,
)
from spine_engine import LoadedModel, ModelRegistry, UnknownModelError

router = APIRouter(prefix="/v2", tags=["kserve-v2"])

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
async def server_ready(state: ModelStateDep) -> JSONResponse:
    body = state.readiness()
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
    inputs, outputs = tensor_metadata(model)
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
    return triton_config(_model(registry, name, model_version), settings.max_batch_size)


@router.post(
    "/models/{name}/infer",
    operation_id="v2_model_infer",
    summary="Inference (JSON or binary tensors)",
    openapi_extra=INFER_OPENAPI,
    responses=INFER_ERRORS,
)
@router.post(
    "/models/{name}/versions/{model_version}/infer",
    operation_id="v2_model_version_infer",
    summary="Inference on a version",
    openapi_extra=INFER_OPENAPI,
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
    body = decompress(await request.body(), request.headers.get("content-encoding"), settings.max_upload_bytes)

    def work() -> tuple[bytes, int | None]:
        infer = parse_infer_request(body, request.headers.get(HEADER_LENGTH), settings.max_batch_size)
        results = registry.run(name, infer.inputs, list(infer.outputs) or None)
        return encode_infer_response(name, model.entry.version, infer, results)

    payload, header_length = await anyio.to_thread.run_sync(partial(work), limiter=limiter)
    if header_length is None:
        return Response(payload, media_type="application/json")
    return Response(payload, media_type="application/octet-stream", headers={HEADER_LENGTH: str(header_length)})
