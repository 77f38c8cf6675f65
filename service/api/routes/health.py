from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import ModelStateDep, SettingsDep
from service.core.config import Settings
from service.core.state import ModelState
from service.schemas import LiveResponse, ReadyResponse

router = APIRouter(prefix="/health", tags=["health"])


def readiness(state: ModelState, settings: Settings) -> ReadyResponse:
    registry = state.registry
    if registry is None:
        reasons = {"service": state.error} if state.error else {"service": "models are loading"}
        return ReadyResponse(
            status="not_ready" if state.error else "loading",
            ready=False,
            execution_provider="none",
            requested_providers=settings.providers,
            require_gpu=settings.require_gpu,
            models_ready=0,
            models_total=0,
            reasons=reasons,
        )
    return ReadyResponse(
        status="ready" if registry.ready else "not_ready",
        ready=registry.ready,
        execution_provider=registry.execution_provider,
        requested_providers=registry.requested_providers,
        require_gpu=settings.require_gpu,
        models_ready=sum(m.servable for m in registry.models.values()),
        models_total=len(registry.models),
        reasons=dict(registry.problems),
    )


@router.get("/live", operation_id="health_live", response_model=LiveResponse, summary="Liveness: 200 while the process runs")
async def live() -> LiveResponse:
    return LiveResponse()


@router.get(
    "/ready",
    operation_id="health_ready",
    response_model=ReadyResponse,
    summary="Readiness: 200 when every model is loaded and warm, else 503 with the reasons",
    responses={503: {"model": ReadyResponse, "description": "Not ready; `reasons` names each model and why"}},
)
async def ready(state: ModelStateDep, settings: SettingsDep) -> JSONResponse:
    body = readiness(state, settings)
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)
