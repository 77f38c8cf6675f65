"""The anatomical structures the product segments and the radiographic view each belongs to."""

from __future__ import annotations

from typing import Literal

View = Literal["AP", "LAT"]
VIEWS: tuple[View, ...] = ("AP", "LAT")

# One U-Net per structure, named exactly as the course dataset names its mask files.
STRUCTURES: dict[str, View] = {
    "Ap_Pedicle": "AP",
    "Ap_Spinous_Process": "AP",
    "Ap_Vertebra": "AP",
    "Lat_Anterior_Vertebral_Line": "LAT",
    "Lat_Disk_Height": "LAT",
    "Lat_Posterior_Vertebral_Line": "LAT",
    "Lat_Spinous_Process": "LAT",
    "Lat_Vertebra": "LAT",
}

CLASSES: tuple[str, str] = ("Normal", "Damaged")
DAMAGED_COBB_DEG = 40.0  # a film is Damaged when its largest Cobb angle is at least this (the labels' definition)
CLASSIFIER_MODEL_NAME = "Mask_Classifier"
TILT_MODEL_NAME = "Ap_Vertebra_tilt"  # each vertebra's remaining tilt from a crop of the film (kind "tilt")
ENDS_MODEL_NAME = "Ap_Vertebra_ends"  # which chain vertebrae are C7, T1, T2, L4, L5, S1 from crops (kind "ends")
LANDMARK_MODEL_NAME = "Ap_Vertebra_landmarks"  # the vertebrae's corners for the measurement (kind "landmarks")


def refinement_model_name(structure: str) -> str:
    """Manifest name of the second-stage model that refines `structure`'s masks."""
    return f"{structure}_refine"


def structures_for_view(view: View) -> list[str]:
    return [name for name, v in STRUCTURES.items() if v == view]
