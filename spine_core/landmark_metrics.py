"""Metrics of predicted vertebra corners and Cobb angles against AASCE labels (numpy + Pillow only).

Shared by `scripts/measure_cobb.py` and, later, `spine-evaluate aasce`.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw


def smape_pct(predicted: np.ndarray, true: np.ndarray) -> float:
    """The AASCE-2019 challenge's SMAPE in percent: per film sum|p - t| / sum(p + t) over its three
    angles, averaged over films (a film whose six angles are all 0 counts as 0 error)."""
    p = np.asarray(predicted, dtype=np.float64).reshape(-1, 3)
    t = np.asarray(true, dtype=np.float64).reshape(-1, 3)
    if p.shape != t.shape or len(p) == 0:
        raise ValueError(f"need matching non-empty (n, 3) angle arrays, got {p.shape} and {t.shape}")
    num = np.abs(p - t).sum(axis=1)
    den = (p + t).sum(axis=1)
    per_film = np.divide(num, den, out=np.zeros_like(num), where=den > 0)
    return float(per_film.mean() * 100)


def mae_deg(predicted: np.ndarray, true: np.ndarray) -> list[float]:
    """Mean absolute error of each of the three angles (columns), in degrees."""
    p = np.asarray(predicted, dtype=np.float64).reshape(-1, 3)
    t = np.asarray(true, dtype=np.float64).reshape(-1, 3)
    return [float(v) for v in np.abs(p - t).mean(axis=0)]


def corner_error_px(predicted: np.ndarray, true: np.ndarray) -> float:
    """Mean Euclidean distance between corresponding corners (any shape ending in 2), in pixels."""
    p = np.asarray(predicted, dtype=np.float64).reshape(-1, 2)
    t = np.asarray(true, dtype=np.float64).reshape(-1, 2)
    if p.shape != t.shape:
        raise ValueError(f"corner arrays differ in shape: {p.shape} vs {t.shape}")
    return float(np.linalg.norm(p - t, axis=1).mean())


def fill_vertebrae(corners: np.ndarray, height: int, width: int) -> np.ndarray:
    """Boolean (height, width) mask of the quadrilaterals TL->TR->BR->BL of (n, 4, 2) pixel corners."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for tl, tr, bl, br in np.asarray(corners, dtype=np.float64).reshape(-1, 4, 2):
        draw.polygon([tuple(tl), tuple(tr), tuple(br), tuple(bl)], fill=1)
    return np.asarray(canvas, dtype=bool)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def vertebra_heights(corners: np.ndarray) -> np.ndarray:
    """(n,) distance between each vertebra's upper and lower endplate midpoints, in pixels."""
    c = np.asarray(corners, dtype=np.float64).reshape(-1, 4, 2)
    return np.linalg.norm((c[:, 2] + c[:, 3]) / 2 - (c[:, 0] + c[:, 1]) / 2, axis=1)


def chain_offset(predicted: np.ndarray, true: np.ndarray) -> float:
    """How far the 17 predicted vertebrae sit from the true ones along the spine, as one number for the film: the
    median of their vertical offsets in steps (the true centre-to-centre spacing); under 0.5 the levels are right."""
    p = np.asarray(predicted, dtype=np.float64).reshape(-1, 4, 2).mean(axis=1)[:, 1]
    t = np.asarray(true, dtype=np.float64).reshape(-1, 4, 2).mean(axis=1)[:, 1]
    return float(np.median((p - t) / max(float(np.median(np.diff(t))), 1e-6)))


def level_offsets(predicted: np.ndarray, true: np.ndarray) -> np.ndarray:
    """(n,) for each predicted vertebra, (index of the nearest true vertebra's centre) - (its own index):
    0 where the level is right, +1 where it sits on the vertebra below, and so on."""
    p = np.asarray(predicted, dtype=np.float64).reshape(-1, 4, 2).mean(axis=1)
    t = np.asarray(true, dtype=np.float64).reshape(-1, 4, 2).mean(axis=1)
    nearest = np.linalg.norm(p[:, None, :] - t[None, :, :], axis=-1).argmin(axis=1)
    return nearest - np.arange(len(p))
