"""The app factory (MLServer style): `create_app(settings)` builds a FastAPI app over a model registry."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from PIL import Image

from service.api.main import api_router
from service.api.routes.v2 import SERVER_VERSION
from service.core.config import Settings, get_settings
from service.core.errors import install_error_handlers
from service.core.logging import configure_logging
from service.core.metrics import Metrics
from service.core.middleware import BodyLimitMiddleware, RequestContextMiddleware
from service.core.state import ModelState
from service.inference import ModelRegistry

log = logging.getLogger(__name__)

DESCRIPTION = """
Segmentation of spine radiographs (one U-Net per structure, AP and lateral views) and Normal/Damaged
scoring of each mask, on ONNX Runtime. `POST /segment` and `POST /classify` take multipart uploads
(PNG 8/16-bit, JPEG, TIFF, DICOM); `/v2/...` is the KServe v2 / Open Inference Protocol over every model.
"""


def _publish_registry(metrics: Metrics, registry: ModelRegistry) -> None:
    """Export readiness and the provider actually in use as metrics once the models are loaded."""
    registry.on_inference = metrics.observe_inference
    metrics.ready.set(1 if registry.ready else 0)
    for model in registry.models.values():
        metrics.model_ready.labels(model.name, model.entry.version, model.provider or "none").set(1 if model.servable else 0)
    metrics.info.info(
        {
            "version": SERVER_VERSION,
            "execution_provider": registry.execution_provider,
            "requested_providers": ",".join(registry.requested_providers),
        }
    )


def create_app(settings: Settings | None = None, registry: ModelRegistry | None = None) -> FastAPI:
    """Build the app. Models load in a background thread at start-up (or pass a ready `registry`)."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_json)
    # Pillow's global bomb guard must not be stricter than our own limit (checked from the header).
    if Image.MAX_IMAGE_PIXELS is not None and settings.max_image_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = settings.max_image_pixels
    metrics = Metrics()
    state = ModelState(settings, registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.limiter = anyio.CapacityLimiter(settings.inference_concurrency)
        state.start(lambda r: _publish_registry(metrics, r))
        log.info(
            "service starting",
            extra={
                "fields": {"models_dir": str(settings.models_dir), "providers": settings.providers, "version": SERVER_VERSION}
            },
        )
        yield

    app = FastAPI(
        title="spine-xray",
        version=SERVER_VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        # Stable operation ids: the route's name, as set on each route (`operation_id=`).
        generate_unique_id_function=lambda route: route.name,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.models = state
    install_error_handlers(app)
    app.include_router(api_router)
    # Added last = outermost: the request id and log line cover everything, including a 413.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_upload_bytes, metrics=metrics)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    return app
