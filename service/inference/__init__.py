"""The inference layer: ONNX Runtime sessions, segmentation, mask scoring and aggregation.

Public API (the evaluation CLI imports it too, so nothing here may import the web framework):

    registry = ModelRegistry.load(models_dir, providers=None, intra_op_threads=None, warmup=True)
    registry.ready, registry.problems, registry.execution_provider, registry.manifest
    result = registry.segment(image, "AP", structures=None)     # -> SegmentationResult
    per_mask = registry.classify_masks(result.model_frame_masks)  # structure -> (p_normal, p_damaged)
    label, score = aggregate_max_score(per_mask)                  # or aggregate_mean
"""

from service.inference.aggregation import AGGREGATIONS, aggregate, aggregate_max_score, aggregate_mean
from service.inference.registry import (
    InferenceError,
    InvalidInputError,
    LoadedModel,
    ModelRegistry,
    ModelUnavailableError,
    SegmentationResult,
    TensorSpec,
    UnknownModelError,
    UnknownStructureError,
    UnknownViewError,
)

__all__ = [
    "AGGREGATIONS",
    "InferenceError",
    "InvalidInputError",
    "LoadedModel",
    "ModelRegistry",
    "ModelUnavailableError",
    "SegmentationResult",
    "TensorSpec",
    "UnknownModelError",
    "UnknownStructureError",
    "UnknownViewError",
    "aggregate",
    "aggregate_max_score",
    "aggregate_mean",
]
