"""The analysis core: ONNX Runtime sessions, segmentation, mask scoring, measurement and the decision.

Below every adapter (the HTTP service, spine-batch, spine-evaluate): no web framework, no Ray, no TensorFlow.
Public API:

    registry = ModelRegistry.load(models_dir, providers=None, intra_op_threads=None, warmup=True, tuning=RuntimeTuning())
    registry.ready, registry.problems, registry.execution_provider, registry.manifest, registry.models
    result = registry.segment(image, "AP", structures=None)     # -> SegmentationResult
    per_mask = registry.classify_masks(result.model_frame_masks)  # structure -> (p_normal, p_damaged)
    label, score = aggregate_max_score(per_mask)                  # or aggregate_mean

Modules: `errors` (what a caller can act on), `models` (one session: load, checks, warm-up), `scheduler`
(slots, micro-batching, a `map` for CPU work), `registry` (manifest -> models, lookups, raw runs),
`segmentation` (choose the U-Nets once, segment, refine, classify masks), `aggregation` (masks -> label).
"""

from spine_engine.aggregation import AGGREGATIONS, aggregate, aggregate_max_score, aggregate_mean
from spine_engine.errors import (
    InferenceError,
    InvalidInputError,
    ModelUnavailableError,
    NoMeasurementError,
    NoSpineFoundError,
    NoValidatedModelError,
    UnknownModelError,
    UnknownStructureError,
    UnknownViewError,
)
from spine_engine.models import DEFAULT_PROVIDERS, GPU_PROVIDERS, ORT_DTYPES, LoadedModel, TensorSpec
from spine_engine.registry import MANIFEST_KEY, ModelRegistry
from spine_engine.scheduler import RuntimeTuning, default_threads
from spine_engine.segmentation import SegmentationResult, Segmenter

__all__ = [
    "AGGREGATIONS",
    "DEFAULT_PROVIDERS",
    "GPU_PROVIDERS",
    "MANIFEST_KEY",
    "ORT_DTYPES",
    "InferenceError",
    "InvalidInputError",
    "LoadedModel",
    "ModelRegistry",
    "ModelUnavailableError",
    "NoMeasurementError",
    "NoSpineFoundError",
    "NoValidatedModelError",
    "RuntimeTuning",
    "SegmentationResult",
    "Segmenter",
    "TensorSpec",
    "UnknownModelError",
    "UnknownStructureError",
    "UnknownViewError",
    "aggregate",
    "aggregate_max_score",
    "aggregate_mean",
    "default_threads",
]
