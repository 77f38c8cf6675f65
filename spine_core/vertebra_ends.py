"""A look at the chain's ends: which of the vertebrae the landmark model found are C7, T1, T2 and L4, L5, S1.

The landmark model finds the vertebrae well; which 17 of them are T1..L5 is what it gets wrong (a C7 taken for
T1, a sacrum for L5: every level between shifts, and the angles and the SEG with them). Telling T1 from C7 takes
the first rib, and L5 from S1 the sacrum and the iliac wings: context a 512x256 frame of a whole film barely
holds. The ends model reads each chain vertebra's own crop of the film at its resolution (`ENDS_SPAN` of its
width on a side, turned level, the same sampling as the tilt model's crops) and answers one of `ENDS_CLASSES`.
Its log-probabilities then vote in the level placement (`spine_core.landmarks`): a placement that calls a
vertebra T1 gains what the model's belief that it is T1 is worth.
"""

from __future__ import annotations

import numpy as np

from spine_core.vertebra_tilt import cobb_vectors, vertebra_crops

ENDS_CROP_HW = (64, 64)
ENDS_SPAN = 4.0  # vertebra widths across the crop: the first ribs' heads, the sacral alae in view
# What a chain vertebra can be, by its level (T1 = 0): above C7, C7, T1, T2, T3..L3, L4, L5, S1, below S1.
ENDS_CLASSES = ("above", "C7", "T1", "T2", "middle", "L4", "L5", "S1", "below")
_LEVEL_OF_CLASS = {"C7": -1, "T1": 0, "T2": 1, "L4": 15, "L5": 16, "S1": 17}
PROBABILITY_FLOOR = 0.01  # one crop's answer costs a placement at most log(1/0.01): it cannot decide alone


def ends_class(levels: np.ndarray) -> np.ndarray:
    """Class index (into ENDS_CLASSES) of each level (T1 = 0, C7 = -1, S1 = 17, ...)."""
    levels = np.asarray(levels)
    out = np.full(levels.shape, ENDS_CLASSES.index("middle"), dtype=int)
    out[levels <= -2] = ENDS_CLASSES.index("above")
    out[levels >= 18] = ENDS_CLASSES.index("below")
    for name, level in _LEVEL_OF_CLASS.items():
        out[levels == level] = ENDS_CLASSES.index(name)
    return out


def ends_crops(
    pixels: np.ndarray, corners: np.ndarray, crop_hw: tuple[int, int] = ENDS_CROP_HW, span: float = ENDS_SPAN
) -> np.ndarray:
    """The ends model's input for these vertebrae ((k, 4, 2) corners in the film's pixels): (k, rows, cols, 1)."""
    angles, widths, centres = cobb_vectors(corners)
    return vertebra_crops(pixels, centres, widths, angles, crop_hw, span)[..., None]


def placement_log_likelihood(log_probs: np.ndarray, levels: np.ndarray) -> float:
    """How well one placement (each chain vertebra's level, T1 = 0) agrees with the ends model's answers
    ((k, len(ENDS_CLASSES)) log-probabilities, floored at `PROBABILITY_FLOOR`)."""
    floored = np.maximum(log_probs, np.log(PROBABILITY_FLOOR))
    return float(floored[np.arange(len(levels)), ends_class(levels)].sum())
