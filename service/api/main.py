from fastapi import APIRouter

from service.api.routes import annotations, dicom, health, inference, metrics, models, ui, v2

api_router = APIRouter()
api_router.include_router(health.router)
api_router.include_router(models.router)
api_router.include_router(inference.router)
api_router.include_router(dicom.router)
api_router.include_router(annotations.router)
api_router.include_router(v2.router)
api_router.include_router(metrics.router)
api_router.include_router(ui.router)
