"""Measurements on the AASCE corner landmarks themselves: how noisy they are, and how the spine splits into
vertebral levels. Used by `scripts/ap_vertebra_label_noise.py` and `scripts/ap_vertebra_errors.py`.

A film's landmarks are (68, 2) x, y normalised to 0..1: 17 vertebrae (T1..L5) x 4 corners in the order
top-left, top-right, bottom-left, bottom-right (`training.datasets.read_aasce_dataset`).
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise

import numpy as np

N_CORNERS = 4
LEVELS = [f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)]

# Std of the n-th difference of independent unit-variance noise: sqrt(sum of squared binomial coefficients).
_DIFFERENCE_GAIN = {2: np.sqrt(6.0), 3: np.sqrt(20.0)}


def corner_series(landmarks: np.ndarray, height: int, width: int) -> np.ndarray:
    """(4 corners, 17 vertebrae, 2) corner positions in pixels."""
    pts = np.asarray(landmarks, dtype=np.float64) * np.array([width, height])
    return pts.reshape(-1, N_CORNERS, 2).transpose(1, 0, 2)


def series_to_landmarks(series: np.ndarray, height: int, width: int) -> np.ndarray:
    """Inverse of `corner_series`."""
    return series.transpose(1, 0, 2).reshape(-1, 2) / np.array([width, height])


def vertebra_height(series: np.ndarray) -> float:
    """Mean vertebral-body height (top corners to bottom corners) in pixels."""
    tl, tr, bl, br = series
    return float(np.mean((bl[:, 1] - tl[:, 1] + br[:, 1] - tr[:, 1]) / 2))


def _robust_std(values: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def corner_noise(films: Iterable[np.ndarray]) -> dict[tuple[int, str], float]:
    """Std of corner placement noise, as a share of each film's vertebra height, from `corner_series` arrays.

    Each corner coordinate is a series over the 17 vertebrae; the n-th difference (n = 2, 3) of independent
    noise of std s has std s * sqrt(6) or s * sqrt(20). Smooth anatomy (curves, heights that grow down the
    spine) adds to the differences, the more so the lower the order, so both figures are upper bounds on s.
    Returns {(order, "x" | "y"): s}; robust (median absolute deviation), pooled over all films.
    """
    pooled: dict[tuple[int, str], list[np.ndarray]] = {(n, a): [] for n in _DIFFERENCE_GAIN for a in ("x", "y")}
    for series in films:
        scale = vertebra_height(series)
        for order in _DIFFERENCE_GAIN:
            d = np.diff(series, n=order, axis=1) / scale
            pooled[order, "x"].append(d[..., 0].ravel())
            pooled[order, "y"].append(d[..., 1].ravel())
    return {key: _robust_std(np.concatenate(v)) / _DIFFERENCE_GAIN[key[0]] for key, v in pooled.items()}


def smooth_along_spine(series: np.ndarray, half_window: int = 2) -> np.ndarray:
    """Each corner coordinate replaced by a quadratic fitted over its 2 * half_window + 1 nearest vertebrae."""
    n = series.shape[1]
    width = 2 * half_window + 1
    out = np.empty_like(series, dtype=np.float64)
    for v in range(n):
        lo = min(max(v - half_window, 0), n - width)
        window = np.arange(lo, lo + width)
        # One least-squares fit for all 4 corners x 2 axes at once.
        coeffs = np.polyfit(window, series[:, window, :].transpose(1, 0, 2).reshape(width, -1), 2)
        out[:, v, :] = (coeffs[0] * v * v + coeffs[1] * v + coeffs[2]).reshape(series.shape[0], 2)
    return out


def level_bands(landmarks: np.ndarray, height: int, width: int) -> list[tuple[int, int]]:
    """Row ranges [start, stop) of the 17 levels, cut at the middle of each disc; T1's band starts at the
    film's top and L5's ends at its bottom, so what is found above T1 or below L5 counts against them."""
    corners_y = corner_series(landmarks, height, width)[..., 1]
    top, bottom = corners_y[:2].mean(axis=0), corners_y[2:].mean(axis=0)
    mid_disc = np.rint((bottom[:-1] + top[1:]) / 2)
    # Clipped and made non-decreasing, so a film with overlapping or off-image corners still tiles its rows.
    cuts = np.maximum.accumulate(np.clip(np.concatenate([[0], mid_disc, [height]]), 0, height)).astype(int)
    return [(int(a), int(b)) for a, b in pairwise(cuts)]
