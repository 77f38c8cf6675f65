"""The models, loaded exactly as the service loads them (its ModelState, from the same Settings)."""

from __future__ import annotations

from service.core.config import Settings
from service.core.state import ModelState
from spine_engine import ModelRegistry


class ModelsNotReadyError(RuntimeError):
    """The service would answer 503 to every image: better said once than in every row."""


def load_registry(settings: Settings) -> ModelRegistry:
    state = ModelState(settings)
    state.start(lambda registry: None)
    state.wait()
    registry = state.registry
    if registry is None:
        raise ModelsNotReadyError(state.error or "loading the models failed")
    if not registry.ready:
        problems = "; ".join(f"{name}: {why}" for name, why in registry.problems.items())
        raise ModelsNotReadyError(f"the models in {settings.models_dir} are not ready: {problems}")
    return registry
