from __future__ import annotations

import anyio
from fastapi import APIRouter

from service.api.deps import ModelStateDep, RegistryDep, require_scope
from service.core.errors import ApiError
from service.schemas import ErrorBody, ModelInfo, ModelsResponse, error_responses
from spine_engine.registry import ModelRegistry

router = APIRouter(tags=["models"])


@router.get(
    "/models",
    operation_id="list_models",
    response_model=ModelsResponse,
    summary="The manifest as served: every model with its version, sha256, input shape, provider, metrics, validated",
    responses=error_responses(503),
)
async def list_models(registry: RegistryDep) -> ModelsResponse:
    return describe(registry)


@router.post(
    "/models/reload",
    operation_id="reload_models",
    response_model=ModelsResponse,
    summary="Load the models folder again (a retrained or promoted model) and serve it; answers what GET /models then shows",
    description=(
        "The new models are loaded (and warmed up) beside the old ones, then swapped in; requests already running finish on "
        "the old ones. With API keys on, the key needs the `admin` scope (SPINE_SCOPED_API_KEYS)."
    ),
    responses={
        403: {"model": ErrorBody, "description": "API keys are on and this key lacks the `admin` scope"},
        503: {"model": ErrorBody, "description": "The first load is still running, or the folder could not be loaded"},
    },
    dependencies=[require_scope("admin")],
)
async def reload_models(state: ModelStateDep) -> ModelsResponse:
    if not state.loaded.is_set():
        raise ApiError(503, "loading", "the models are still loading for the first time; retry when GET /health/ready answers")
    try:
        registry = await anyio.to_thread.run_sync(state.reload)
    except Exception as exc:  # the folder is broken (e.g. an unreadable manifest): the old models keep serving
        raise ApiError(
            503, "reload_failed", f"the models folder could not be loaded ({exc}); the previous models still serve"
        ) from exc
    return describe(registry)


def describe(registry: ModelRegistry) -> ModelsResponse:
    models = [
        ModelInfo(
            **model.entry.model_dump(),
            ready=model.servable,
            provider=model.provider,
            precision=model.precision,
            problem=model.problem,
        )
        for model in registry.models.values()
    ]
    return ModelsResponse(
        ready=registry.ready,
        execution_provider=registry.execution_provider,
        manifest_created=registry.manifest.created if registry.manifest else None,
        models=models,
    )
