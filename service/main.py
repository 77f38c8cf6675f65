"""The app factory (MLServer style): `create_app(settings)` builds a FastAPI app over a model registry."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI
from PIL import Image
from starlette.formparsers import MultiPartParser
from starlette.middleware.cors import CORSMiddleware

from service.api.errors import install_error_handlers
from service.api.main import api_router
from service.core.admission import INFERENCE_PATH, AdmissionMiddleware
from service.core.config import Settings, get_settings
from service.core.logging import configure_logging
from service.core.metrics import Metrics
from service.core.middleware import BodyLimitMiddleware, RequestContextMiddleware
from service.core.security import ApiKeyMiddleware, describe_in_openapi, parse_scoped_keys
from service.core.state import ModelState
from service.kserve import SERVER_VERSION
from spine_engine import ModelRegistry
from spine_engine.errors import error_code_table

log = logging.getLogger(__name__)

DESCRIPTION = """
Segmentation of spine radiographs (one U-Net per structure, AP and lateral views) and Normal/Damaged
scoring of each mask, on ONNX Runtime. `POST /segment` and `POST /classify` take multipart uploads
(PNG 8/16-bit, JPEG, TIFF, DICOM); `/v2/...` is the KServe v2 / Open Inference Protocol over every model.

## Error codes

Every error answers `{"code", "detail", "request_id"}` (the `/v2` routes: `{"error"}`); the same mistake gets
the same code on every route.

""" + error_code_table()


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
    # No uploaded image is ever written to disk: Starlette spools a multipart file to a temporary file once
    # it passes `spool_max_size` (1 MiB by default); above the body limit it never does (class-wide, like the above).
    MultiPartParser.spool_max_size = max(MultiPartParser.spool_max_size, settings.max_upload_bytes + 1)
    metrics = Metrics()
    state = ModelState(settings, registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.limiter = anyio.CapacityLimiter(settings.inference_concurrency)
        state.start(lambda r: _publish_registry(metrics, r))
        log.info(
            "service starting",
            extra={
                "fields": {
                    "models_dir": str(settings.models_dir),
                    "providers": settings.providers,
                    "version": SERVER_VERSION,
                    "api_keys": len(settings.api_keys),  # how many, never which
                    "cors_allow_origins": settings.cors_allow_origins,
                    "max_in_flight": settings.inference_concurrency + settings.max_queue,
                }
            },
        )
        yield

    app = FastAPI(
        title="spine-xray",
        version=SERVER_VERSION,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # /docs and /redoc come from service/api/routes/ui.py, with assets served offline
        redoc_url=None,
        # Stable operation ids: the route's name, as set on each route (`operation_id=`).
        generate_unique_id_function=lambda route: route.name,
        # A form has at most 2 files and 5 fields: hostile field counts and long values are a 400 while parsing.
        form_limits={
            "max_fields": settings.max_form_fields,
            "max_files": settings.max_form_files,
            "max_part_size": settings.max_field_bytes,
        },
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.models = state
    install_error_handlers(app)
    app.include_router(api_router)
    api_keys = [k.get_secret_value() for k in settings.api_keys]
    scoped_keys = parse_scoped_keys(k.get_secret_value() for k in settings.scoped_api_keys)
    describe_in_openapi(
        app,
        auth=bool(api_keys or scoped_keys),
        exempt_paths=settings.auth_exempt_paths,
        is_inference=lambda p: bool(INFERENCE_PATH.match(p)),
    )
    # Added last = outermost. Request order: request id + log line -> CORS -> API key -> admission (503 when
    # full) -> body limit -> routes. So a 401, 413 or 503 is logged with its id, a CORS preflight needs no
    # key, and a request without a key never takes a place in the queue.
    app.add_middleware(
        BodyLimitMiddleware, max_bytes=settings.max_upload_bytes, metrics=metrics, timeout_s=settings.body_timeout_s
    )
    app.add_middleware(
        AdmissionMiddleware,
        capacity=settings.inference_concurrency + settings.max_queue,
        retry_after_s=settings.retry_after_s,
        metrics=metrics,
    )
    if api_keys or scoped_keys:
        app.add_middleware(
            ApiKeyMiddleware, keys=api_keys, exempt_paths=settings.auth_exempt_paths, metrics=metrics, scoped=scoped_keys
        )
    if settings.cors_allow_origins:  # closed by default: no CORS headers, browsers refuse cross-origin reads
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "X-API-Key", "X-Request-ID", "Content-Type", "Inference-Header-Content-Length"],
            expose_headers=["X-Request-ID", "Retry-After", "Inference-Header-Content-Length"],
            allow_credentials=False,
            max_age=600,
        )
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    return app
