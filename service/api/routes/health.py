from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.api.deps import ModelStateDep
from service.schemas import LiveResponse, ReadyResponse

router = APIRouter(prefix="/health", tags=["health"])


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
async def ready(state: ModelStateDep) -> JSONResponse:
    body = state.readiness()
    return JSONResponse(body.model_dump(), status_code=200 if body.ready else 503)
