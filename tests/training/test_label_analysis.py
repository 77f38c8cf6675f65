"""Landmark measurements behind docs/training.md's label-noise and per-level figures, on synthetic spines."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from training.datasets import N_VERTEBRAE, rasterize_vertebrae
from training.label_analysis import (
    LEVELS,
    corner_noise,
    corner_series,
    level_bands,
    series_to_landmarks,
    smooth_along_spine,
    vertebra_height,
)

HEIGHT, WIDTH = 2000, 800


def _smooth_spine(rng: np.random.Generator) -> np.ndarray:
    """(4, 17, 2) corners of a spine whose coordinates are quadratic in the level: vertebrae grow down the
    spine and the column bends, but no third difference is non-zero."""
    k = np.arange(N_VERTEBRAE, dtype=np.float64)
    pitch = 95 + rng.uniform(-5, 5) + 1.5 * k  # top-to-top distance, growing
    top = 150 + np.concatenate([[0.0], np.cumsum(pitch[:-1])])
    body = 0.8 * pitch
    centre = 400 + rng.uniform(-0.5, 0.5) * (k - 8) ** 2 + rng.uniform(-3, 3) * k
    half = 60 + 1.0 * k
    tl = np.stack([centre - half, top], 1)
    tr = np.stack([centre + half, top], 1)
    bl = np.stack([centre - half, top + body], 1)
    br = np.stack([centre + half, top + body], 1)
    return np.stack([tl, tr, bl, br])


def test_corner_series_round_trips_and_reads_heights() -> None:
    spine = _smooth_spine(np.random.default_rng(0))
    landmarks = series_to_landmarks(spine, HEIGHT, WIDTH)
    assert landmarks.shape == (4 * N_VERTEBRAE, 2)
    np.testing.assert_allclose(corner_series(landmarks, HEIGHT, WIDTH), spine)
    assert vertebra_height(spine) == pytest.approx(np.mean(0.8 * (95 + 1.5 * np.arange(N_VERTEBRAE))), abs=5)


def test_smoothing_keeps_quadratic_spines_and_removes_most_jitter() -> None:
    rng = np.random.default_rng(1)
    spine = _smooth_spine(rng)
    np.testing.assert_allclose(smooth_along_spine(spine), spine, atol=1e-6)
    noisy = spine + rng.normal(scale=6.0, size=spine.shape)
    before = np.sqrt(np.mean((noisy - spine) ** 2))
    after = np.sqrt(np.mean((smooth_along_spine(noisy) - spine) ** 2))
    assert after < 0.8 * before


@pytest.mark.parametrize("share", [0.03, 0.08])
def test_corner_noise_recovers_the_injected_noise(share: float) -> None:
    rng = np.random.default_rng(2)
    films = []
    for _ in range(300):
        spine = _smooth_spine(rng)
        films.append(spine + rng.normal(size=spine.shape) * share * vertebra_height(spine))
    noise = corner_noise(films)
    # Third differences see only the noise on these spines; second differences also see the bend.
    assert noise[3, "x"] == pytest.approx(share, rel=0.1)
    assert noise[3, "y"] == pytest.approx(share, rel=0.1)
    assert noise[2, "y"] == pytest.approx(share, rel=0.15)


def test_corner_noise_of_clean_spines_is_near_zero() -> None:
    rng = np.random.default_rng(3)
    noise = corner_noise([_smooth_spine(rng) for _ in range(50)])
    assert noise[3, "x"] < 1e-6 and noise[3, "y"] < 1e-6


def test_level_bands_tile_the_film_and_hold_their_vertebra() -> None:
    spine = _smooth_spine(np.random.default_rng(4))
    landmarks = series_to_landmarks(spine, HEIGHT, WIDTH)
    bands = level_bands(landmarks, HEIGHT, WIDTH)
    assert len(bands) == len(LEVELS) == N_VERTEBRAE
    assert bands[0][0] == 0 and bands[-1][1] == HEIGHT
    assert all(a[1] == b[0] for a, b in pairwise(bands))
    mask = rasterize_vertebrae(landmarks, HEIGHT, WIDTH)
    for level, (start, stop) in enumerate(bands):
        single = rasterize_vertebrae(landmarks[4 * level : 4 * level + 4], HEIGHT, WIDTH)
        rows = np.flatnonzero(single.any(axis=1))
        assert start <= rows[0] and rows[-1] < stop, LEVELS[level]
        # Each band holds its own vertebra and no other.
        assert mask[start:stop].sum() == single[start:stop].sum()


def test_level_bands_stay_in_the_film_when_corners_fall_outside() -> None:
    spine = _smooth_spine(np.random.default_rng(5))
    spine[..., 1] -= 400  # T1..T3 above the film's top edge
    bands = level_bands(series_to_landmarks(spine, HEIGHT, WIDTH), HEIGHT, WIDTH)
    assert bands[0][0] == 0 and bands[-1][1] == HEIGHT
    assert all(0 <= start <= stop <= HEIGHT for start, stop in bands)
