"""The inference layer: ONNX Runtime sessions, segmentation, mask scoring and aggregation.

Public API (the evaluation CLI imports it too, so nothing here may import the web framework):

    registry = ModelRegistry.load(models_dir, providers=None, intra_op_threads=None, warmup=True, tuning=RuntimeTuning())
    registry.ready, registry.problems, registry.execution_provider, registry.manifest, registry.models
    result = registry.segment(image, "AP", structures=None)     # -> SegmentationResult
    per_mask = registry.classify_masks(result.model_frame_masks)  # structure -> (p_normal, p_damaged)
    label, score = aggregate_max_score(per_mask)                  # or aggregate_mean

Modules: `errors` (what a caller can act on), `models` (one session: load, checks, warm-up), `scheduler`
(slots, micro-batching, a `map` for CPU work), `registry` (manifest -> models, lookups, raw runs),
`segmentation` (choose the U-Nets once, segment, refine, classify masks), `aggregation` (masks -> label).
"""

from service.inference.aggregation import AGGREGATIONS, aggregate, aggregate_max_score, aggregate_mean
from service.inference.errors import (
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
from service.inference.models import DEFAULT_PROVIDERS, GPU_PROVIDERS, ORT_DTYPES, LoadedModel, TensorSpec
from service.inference.registry import MANIFEST_KEY, ModelRegistry
from service.inference.scheduler import RuntimeTuning, default_threads
from service.inference.segmentation import SegmentationResult

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
    "TensorSpec",
    "UnknownModelError",
    "UnknownStructureError",
    "UnknownViewError",
    "aggregate",
    "aggregate_max_score",
    "aggregate_mean",
    "default_threads",
]
