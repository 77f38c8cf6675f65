from __future__ import annotations

from fastapi import APIRouter

from service.api.deps import RegistryDep
from service.schemas import ModelInfo, ModelsResponse, error_responses

router = APIRouter(tags=["models"])


@router.get(
    "/models",
    operation_id="list_models",
    response_model=ModelsResponse,
    summary="The manifest as served: every model with its version, sha256, input shape, provider, metrics, validated",
    responses=error_responses(503),
)
async def list_models(registry: RegistryDep) -> ModelsResponse:
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
