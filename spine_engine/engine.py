"""The loaded models and what is resolved once from them: the `Engine` every entry point analyses with."""

from __future__ import annotations

from dataclasses import dataclass, field

from spine_engine.decision import DecisionRules
from spine_engine.policy import DEFAULT_POLICY, MAX_IMAGE_PIXELS, AnalysisPolicy
from spine_engine.registry import ModelRegistry
from spine_engine.segmentation import Segmenter
from spine_engine.settings import EngineSettings


class ModelsNotReadyError(RuntimeError):
    """The models cannot answer (a bad manifest, a missing or corrupt file): said once, not per image."""


@dataclass
class Engine:
    registry: ModelRegistry  # loading and lookup; every session run through its scheduler
    policy: AnalysisPolicy = DEFAULT_POLICY  # this deployment's defaults (a request may override them)
    max_pixels: int = MAX_IMAGE_PIXELS
    segmenter: Segmenter = field(init=False)
    rules: DecisionRules = field(init=False)  # calibration, cut-off, classes: resolved once, read by every writer

    def __post_init__(self) -> None:
        self.segmenter = Segmenter(self.registry)
        self.rules = DecisionRules.of(self.registry)

    @classmethod
    def from_settings(cls, registry: ModelRegistry, settings: EngineSettings) -> Engine:
        return cls(registry, settings.policy(), settings.max_image_pixels)


def load_registry(settings: EngineSettings) -> ModelRegistry:
    """Every manifest model loaded as the settings say (never raises for a bad model: see `problems`)."""
    return ModelRegistry.load(
        settings.models_dir,
        providers=settings.providers,
        intra_op_threads=settings.intra_op_threads,
        warmup=settings.warmup,
        inter_op_threads=settings.inter_op_threads,
        require_gpu=settings.require_gpu,
        verify_sha256=settings.verify_sha256,
        precision=settings.precision,
        use_refinement=settings.refinement,
        tuning=settings.tuning(),
        provider_options={"CUDAExecutionProvider": {"cudnn_conv_algo_search": settings.cudnn_conv_algo_search}},
    )


def load_engine(settings: EngineSettings, require_ready: bool = True) -> Engine:
    """The engine of these settings; `require_ready`: raise ModelsNotReadyError unless every model is servable."""
    registry = load_registry(settings)
    if require_ready and not registry.ready:
        problems = "; ".join(f"{name}: {why}" for name, why in registry.problems.items())
        raise ModelsNotReadyError(f"the models in {settings.models_dir} are not ready: {problems}")
    return Engine.from_settings(registry, settings)
