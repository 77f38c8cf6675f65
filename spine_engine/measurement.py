"""The measurement of an AP film: the vertebrae T1-L5 and the Cobb angles, read from its vertebra mask.

`measure_spine` is the one place a reading is made; a second way to find the vertebrae (e.g. a learned
landmark model) goes in here, behind the same function, and every entry point gets it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from spine_core.cobb import CobbResult, cobb_angles
from spine_core.vertebrae import VertebraeResult, find_vertebrae


@dataclass(frozen=True)
class Measurement:
    vertebrae: VertebraeResult
    cobb: CobbResult | None  # None when the 17 vertebrae were not all found, or their corners give no angle


def measure_spine(pixels: np.ndarray, vertebra_mask: np.ndarray) -> Measurement:
    """The vertebrae (corners at the film's pixels) and Cobb angles of one AP film from its vertebra mask (bool,
    the film's size); `pixels` is the decoded film."""
    vertebrae = find_vertebrae(vertebra_mask)
    corners = vertebrae.corners()
    cobb = None
    if corners is not None:
        try:
            cobb = cobb_angles(corners, int(pixels.shape[0]), vertebrae.confidences())
        except ValueError as exc:  # degenerate corners: no angle rather than a wrong one
            vertebrae = replace(vertebrae, reason=f"the vertebrae's corners give no angle ({exc})")
    return Measurement(vertebrae, cobb)
