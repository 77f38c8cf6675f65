"""Code shared by training, evaluation and serving; never imports TensorFlow."""

from spine_core.structures import CLASSES, CLASSIFIER_MODEL_NAME, STRUCTURES, VIEWS, structures_for_view

__all__ = ["CLASSES", "CLASSIFIER_MODEL_NAME", "STRUCTURES", "VIEWS", "structures_for_view"]
