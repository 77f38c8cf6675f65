"""The model registry behind the app, loaded in a thread so the process is live while models load."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from service.core.config import Settings
from service.schemas import ReadyResponse
from spine_engine.engine import Engine, load_registry
from spine_engine.registry import ModelRegistry

log = logging.getLogger(__name__)


class ModelState:
    def __init__(self, settings: Settings, registry: ModelRegistry | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.engine = Engine.from_settings(registry, settings) if registry is not None else None
        self.error: str | None = None
        self.loaded = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_loaded: Callable[[ModelRegistry], None] = lambda _: None
        self._reload_lock = threading.Lock()
        if registry is not None:
            self.loaded.set()

    def start(self, on_loaded: Callable[[ModelRegistry], None]) -> None:
        self._on_loaded = on_loaded
        if self.registry is not None:
            on_loaded(self.registry)
            return
        self._thread = threading.Thread(target=self._load, args=(on_loaded,), name="model-loader", daemon=True)
        self._thread.start()

    def reload(self) -> ModelRegistry:
        """Load the models folder again (a new manifest, retrained or promoted models) and swap it in when loaded.

        Requests already running finish on the engine they started with; one reload at a time.
        """
        with self._reload_lock:
            registry = load_registry(self.settings)
            self._on_loaded(registry)
            self.engine = Engine.from_settings(registry, self.settings)
            self.registry, self.error = registry, None
            log.info("models reloaded", extra={"fields": {"ready": registry.ready, "problems": registry.problems}})
            return registry

    def _load(self, on_loaded: Callable[[ModelRegistry], None]) -> None:
        s = self.settings
        started = time.perf_counter()
        try:
            registry = load_registry(s)
            on_loaded(registry)
            self.engine = Engine.from_settings(registry, s)
            self.registry = registry
            log.info(
                "models loaded",
                extra={
                    "fields": {
                        "ready": registry.ready,
                        "execution_provider": registry.execution_provider,
                        "models": len(registry.models),
                        "problems": registry.problems,
                        "seconds": round(time.perf_counter() - started, 3),
                    }
                },
            )
        except Exception as exc:  # a bug, not a bad model: keep the process up and say so in readiness
            log.exception("loading the models failed")
            self.error = f"loading the models failed: {exc}"
        finally:
            self.loaded.set()

    def readiness(self) -> ReadyResponse:
        """What /health/ready and /v2/health/ready report: ready or not, and why."""
        settings, registry = self.settings, self.registry
        if registry is None:
            reasons = {"service": self.error} if self.error else {"service": "models are loading"}
            return ReadyResponse(
                status="not_ready" if self.error else "loading",
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

    def wait(self, timeout: float | None = None) -> bool:
        return self.loaded.wait(timeout)
