"""A second look at each vertebra's tilt: crops at the film's own resolution, turned level, for the tilt model.

The Cobb angles are differences of the 17 vertebrae's tilts (the vector from the middle of a vertebra's left
side to the middle of its right side, `spine_core.cobb`). The landmark model reads the corners on a 512x256
frame, about a fifth of an AASCE film's resolution; its tilt error (median 1.9 degrees on the validation films)
is what the angles' SMAPE is made of: the same vertebrae with the labels' tilts give 0.7 % instead of 9.6 %.

`vertebra_crops` cuts one square per vertebra from the original pixels, centred on it and turned by its read
tilt so that it lies level, `CROP_SPAN` of its width on a side (the discs and the neighbours' endplates in
view), sampled at twice the model's input size and averaged 2x2 (a plain bilinear sample of a film several times larger
would alias), then standardised. The tilt model answers, per crop, how far the vertebra still is from level
(`TILT_SCALE` degrees per unit); `turn_vertebrae` turns each vertebra's corners about its centre by that.
Training (`training/tilt.py`) cuts its crops with these same functions.
"""

from __future__ import annotations

import cv2
import numpy as np

from spine_core.cobb import side_vectors
from spine_core.preprocessing import to_grayscale

CROP_HW = (64, 64)  # the tilt model's input, rows x columns
CROP_SPAN = 1.6  # the crop's width as a multiple of the vertebra's width (its height at the same scale)
TILT_SCALE = 10.0  # degrees per unit of the model's output (keeps the regression target near 1)
MAX_TURN_DEG = 15.0  # the most one answer may turn a vertebra: beyond, the crop was not of the vertebra read
# OpenCV's remap takes maps of at most 32767 rows: crops are sampled in groups of this many (128 rows each).
_REMAP_GROUP = 200


def cobb_vectors(corners: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(k, 4, 2) TL, TR, BL, BR -> each vertebra's tilt (radians, image y down), width and centre (k, 2): of the
    vector the Cobb angles are measured between (`spine_core.cobb.side_vectors`)."""
    vector = side_vectors(corners)
    return np.arctan2(vector[:, 1], vector[:, 0]), np.linalg.norm(vector, axis=1), corners.mean(axis=1)


def crop_grid(
    centres: np.ndarray, widths: np.ndarray, angles: np.ndarray, crop_hw: tuple[int, int] = CROP_HW, span: float = CROP_SPAN
) -> np.ndarray:
    """(2, k, 2*rows, 2*cols) row, col sample positions of each vertebra's level rectangle in the film."""
    rows, cols = 2 * crop_hw[0], 2 * crop_hw[1]
    side = span * np.maximum(widths, 1.0)
    u = (np.arange(cols) + 0.5) / cols - 0.5  # -0.5..0.5 along the vertebra
    v = ((np.arange(rows) + 0.5) / rows - 0.5) * rows / cols  # the same scale across it
    # The map is affine: each position is the centre plus one term along the row and one down the column, added
    # by broadcasting ((k, 1, cols) + (k, rows, 1)) rather than computed on full meshgrids (4x less work).
    along_cos, along_sin = (side * np.cos(angles))[:, None] * u, (side * np.sin(angles))[:, None] * u  # (k, cols)
    across_cos, across_sin = (side * np.cos(angles))[:, None] * v, (side * np.sin(angles))[:, None] * v  # (k, rows)
    grid = np.empty((2, len(side), rows, cols))
    # pixel centres at half-integers (the corners' convention)
    grid[0] = (centres[:, 1] - 0.5)[:, None, None] + along_sin[:, None, :] + across_cos[:, :, None]
    grid[1] = (centres[:, 0] - 0.5)[:, None, None] + along_cos[:, None, :] - across_sin[:, :, None]
    return grid


def vertebra_crops(
    pixels: np.ndarray,
    centres: np.ndarray,
    widths: np.ndarray,
    angles: np.ndarray,
    crop_hw: tuple[int, int] = CROP_HW,
    span: float = CROP_SPAN,
) -> np.ndarray:
    """(k, rows, cols) float32 standardised crops of the film, each vertebra turned level by `angles`."""
    gray = np.ascontiguousarray(to_grayscale(pixels), dtype=np.float32)
    grid = crop_grid(np.asarray(centres, float), np.asarray(widths, float), np.asarray(angles, float), crop_hw, span)
    k, rows, cols = grid.shape[1:]
    # Bilinear, the film's edge row or column repeated beyond it (scipy's map_coordinates(order=1, mode="nearest")
    # gives the same values to 1e-5 of the pixel range, at about ten times the cost).
    sampled = np.concatenate(
        [
            cv2.remap(
                gray,
                grid[1, i : i + _REMAP_GROUP].reshape(-1, cols).astype(np.float32),
                grid[0, i : i + _REMAP_GROUP].reshape(-1, cols).astype(np.float32),
                cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REPLICATE,
            )
            for i in range(0, k, _REMAP_GROUP)
        ]
    ).reshape(k, rows, cols)
    # 2x2 means, as four strided slices (numpy's mean over reshaped axes is ~15x slower here).
    crops = (sampled[:, ::2, ::2] + sampled[:, 1::2, ::2] + sampled[:, ::2, 1::2] + sampled[:, 1::2, 1::2]) * 0.25
    mean = crops.mean(axis=(1, 2), keepdims=True)
    std = crops.std(axis=(1, 2), keepdims=True)
    return ((crops - mean) / np.maximum(std, 1e-3)).astype(np.float32)


def turn_vertebrae(corners: np.ndarray, turn_rad: np.ndarray) -> np.ndarray:
    """Each vertebra's four corners turned about its centre by its angle (radians, image y down)."""
    centre = corners.mean(axis=1, keepdims=True)
    cos, sin = np.cos(turn_rad)[:, None], np.sin(turn_rad)[:, None]
    x, y = corners[..., 0] - centre[..., 0], corners[..., 1] - centre[..., 1]
    return np.stack([centre[..., 0] + cos * x - sin * y, centre[..., 1] + sin * x + cos * y], axis=-1)


def crops_for(pixels: np.ndarray, corners: np.ndarray, crop_hw: tuple[int, int] = CROP_HW, span: float = CROP_SPAN) -> np.ndarray:
    """The tilt model's input for these vertebrae: (k, rows, cols, 1)."""
    angles, widths, centres = cobb_vectors(corners)
    return vertebra_crops(pixels, centres, widths, angles, crop_hw, span)[..., None]


def refine_tilts(corners: np.ndarray, answers: np.ndarray) -> np.ndarray:
    """Corners turned by the tilt model's answers on `crops_for(pixels, corners)` (clipped to `MAX_TURN_DEG`)."""
    turn = np.clip(np.asarray(answers, float).reshape(-1) * TILT_SCALE, -MAX_TURN_DEG, MAX_TURN_DEG)
    return turn_vertebrae(corners, np.radians(turn))
