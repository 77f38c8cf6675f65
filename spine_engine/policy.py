"""What runs and what decides by default, and the size limit of an image: the defaults, written once.

`EngineSettings` (SPINE_* variables) takes its defaults from here; a request may override the policy.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_IMAGE_PIXELS = 100_000_000  # largest decoded image (width x height); larger is a 413 (SPINE_MAX_IMAGE_PIXELS)


@dataclass(frozen=True)
class AnalysisPolicy:
    """What runs and what decides by default (settings of the same names; docs/trust.md says why)."""

    demonstration_models: bool = False  # run a view's demonstration U-Nets without being asked
    demonstration_models_decide: bool = False  # let their scores enter the label
    aggregation: str = "measured"  # measured | cobb (the measured angle) | mean | max_score (classifier rules)
    localisation: bool = True  # full-body films: keep the vertebra chain, re-segment a window around it
    spine_check: bool = True  # refuse (no_spine_found) what is not a readable AP spine
    measurement: str = "landmarks"  # landmarks (the landmark model, when loaded) | mask (the Ap_Vertebra mask's geometry)
    tilt_model: bool = True  # turn each landmark vertebra by the tilt model's second look (when the manifest has one)
    ends_model: bool = True  # let the ends model's reading of the chain's crops vote in the level placement (when one is served)
    vertebra_mask: str = "auto"  # unet | corners (filled from the landmark model's) | auto (the manifest's serves_mask)


DEFAULT_POLICY = AnalysisPolicy()
