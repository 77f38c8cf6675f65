"""Typed dependencies (fastapi full-stack-template style): routes declare what they need, nothing global."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import anyio
from fastapi import Depends, Request

from service.core.config import Settings
from service.core.errors import ApiError
from service.core.metrics import Metrics
from service.core.state import ModelState
from spine_engine.engine import Engine
from spine_engine.registry import ModelRegistry

# `async def` although nothing here awaits: FastAPI runs a plain `def` dependency in its thread pool, one hop
# per dependency per request; more threads also mean more glibc malloc arenas (see service/__main__.py).


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_model_state(request: Request) -> ModelState:
    return request.app.state.models


async def get_registry(state: Annotated[ModelState, Depends(get_model_state)]) -> ModelRegistry:
    if state.registry is None:
        if state.error:
            raise ApiError(503, "not_ready", state.error)
        raise ApiError(503, "loading", "the models are still loading; retry when GET /health/ready says ready")
    return state.registry


async def get_engine(state: Annotated[ModelState, Depends(get_model_state)]) -> Engine:
    await get_registry(state)  # the same 503 while loading or after a failed load
    assert state.engine is not None  # set with the registry
    return state.engine


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_limiter(request: Request) -> anyio.CapacityLimiter:
    limiter = getattr(request.app.state, "limiter", None)
    if limiter is None:  # app used without its lifespan (e.g. TestClient outside `with`)
        limiter = request.app.state.limiter = anyio.CapacityLimiter(request.app.state.settings.inference_concurrency)
    return limiter


def require_scope(scope: str) -> Any:
    """A route dependency: with API keys on, the request's key must carry `scope` (SPINE_SCOPED_API_KEYS), else 403."""

    async def check(request: Request) -> None:
        settings: Settings = request.app.state.settings
        if not (settings.api_keys or settings.scoped_api_keys):
            return  # an open service (no keys at all) is open for every operation
        if scope not in getattr(request.state, "api_scopes", frozenset()):
            raise ApiError(
                403,
                "forbidden",
                f"this API key does not carry the `{scope}` scope (give one listed as `{scope}:<key>` in SPINE_SCOPED_API_KEYS)",
            )

    checker: Callable[[Request], Awaitable[None]] = check
    return Depends(checker)


SettingsDep = Annotated[Settings, Depends(get_settings)]
ModelStateDep = Annotated[ModelState, Depends(get_model_state)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
EngineDep = Annotated[Engine, Depends(get_engine)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
LimiterDep = Annotated[anyio.CapacityLimiter, Depends(get_limiter)]
