from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from service.api.deps import MetricsDep

router = APIRouter(tags=["monitoring"])


@router.get(
    "/metrics",
    operation_id="metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text exposition format"}},
)
async def metrics(metrics: MetricsDep) -> Response:
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)
