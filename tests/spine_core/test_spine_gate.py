"""spine_core.spine_gate on synthetic masks and frames (no models)."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest

from spine_core.preprocessing import Letterbox
from spine_core.spine_gate import (
    DEFAULT_THRESHOLDS,
    NO_SPINE_FOUND,
    check_spine,
    frame_statistics,
    image_statistics,
    mask_features,
)

FRAME = (512, 256)


def column(top: float = 0.05, bottom: float = 0.92, levels: int = 17, half_width: int = 16) -> np.ndarray:
    """A column of separate vertebra-like boxes from `top` to `bottom` (fractions of the frame height)."""
    mask = np.zeros(FRAME, dtype=bool)
    edges = np.linspace(top * FRAME[0], bottom * FRAME[0], levels + 1)
    for y0, y1 in pairwise(edges):
        mask[int(y0) + 2 : int(y1) - 2, 128 - half_width : 128 + half_width] = True
    return mask


def radiograph_like_frame(seed: int = 0) -> np.ndarray:
    """Smooth anatomy-scale structure plus a little fine detail, in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : FRAME[0], 0 : FRAME[1]]
    frame = 0.5 + 0.3 * np.sin(yy / 9.0) * np.cos(xx / 13.0) + rng.normal(0, 0.01, FRAME)
    return np.clip(frame, 0, 1)


def test_a_full_column_passes():
    result = check_spine(column(), frame_statistics(radiograph_like_frame()))
    assert result.ok and result.code is None and result.failed == []
    assert result.features["components"] == 17
    assert result.features["vertical_extent"] == pytest.approx(0.87, abs=0.02)


def test_an_empty_mask_is_refused_with_the_code_and_plain_reasons():
    result = check_spine(np.zeros(FRAME, dtype=bool))
    assert not result.ok and result.code == NO_SPINE_FOUND
    assert set(result.failed) == {"vertical_extent", "area_fraction", "components"}
    assert result.reason.startswith("no spine found: ") and "0%" in result.reason


def test_a_short_column_is_refused_for_its_extent_only():
    result = check_spine(column(top=0.4, bottom=0.7, levels=8, half_width=40))
    assert result.failed == ["vertical_extent"]


def test_one_tall_blob_is_not_a_column():
    mask = np.zeros(FRAME, dtype=bool)
    mask[40:480, 100:160] = True
    assert check_spine(mask).failed == ["components"]


def test_a_thin_sparse_column_is_refused_for_its_area():
    result = check_spine(column(half_width=2))
    assert result.failed == ["area_fraction"]


@pytest.mark.parametrize("modality", ["CT", "mr ", "NM", "US"])
def test_a_dicom_modality_that_is_not_a_radiograph_is_refused(modality):
    result = check_spine(column(), frame_statistics(radiograph_like_frame()), modality=modality)
    assert result.failed == ["modality"] and "not a radiograph" in result.reason


@pytest.mark.parametrize("modality", [None, "DX", "CR", "OT"])
def test_radiograph_or_unknown_modalities_are_not_held_against_an_input(modality):
    assert check_spine(column(), frame_statistics(radiograph_like_frame()), modality=modality).ok


def test_the_letterbox_restricts_the_signals_to_the_image_region():
    # a square image letterboxed into the middle half of the frame: the same mask spans twice the share of it
    box = Letterbox(src_h=100, src_w=100, out_h=512, out_w=256, content_h=256, content_w=256, top=128, left=0)
    mask = column(top=0.36, bottom=0.64)
    assert mask_features(mask)["vertical_extent"] < DEFAULT_THRESHOLDS.min_vertical_extent
    assert mask_features(mask, box)["vertical_extent"] == pytest.approx(0.28 * 512 / 256, abs=0.03)


@pytest.mark.parametrize(
    ("name", "frame", "signal"),
    [
        ("constant", np.zeros(FRAME), "contrast"),
        ("noise", np.random.default_rng(1).uniform(0, 1, FRAME), "high_frequency"),
        ("gradient", np.tile(np.linspace(0, 1, FRAME[1]), (FRAME[0], 1)), "high_frequency"),
    ],
)
def test_image_statistics_refuse_blank_noise_and_gradients_even_with_a_good_mask(name, frame, signal):
    result = check_spine(column(), frame_statistics(frame))
    assert not result.ok, name
    assert result.failed == [signal]


def test_image_statistics_subsample_large_images_and_match_small_ones():
    rng = np.random.default_rng(2)
    small = rng.uniform(0, 255, (400, 200)).astype(np.uint8)
    large = np.kron(small, np.ones((10, 10), dtype=np.uint8))  # 4000 x 2000, same picture
    a, b = image_statistics(small), image_statistics(large)
    assert a["contrast"] == pytest.approx(b["contrast"], rel=0.1)
    assert a["high_frequency"] > DEFAULT_THRESHOLDS.max_high_frequency
    assert image_statistics(np.full((300, 300, 3), 7, np.uint8)) == {"contrast": 0.0, "high_frequency": 0.0}


def test_landmark_vertebrae_stand_in_for_a_patchy_mask_but_not_for_the_image():
    from spine_core.spine_gate import check_spine

    patchy = np.zeros((512, 256), dtype=bool)
    patchy[200:300, 100:140] = True  # one blob: extent, area and components all fail
    good_image = {"contrast": 0.3, "high_frequency": 0.07}
    seen = {"landmark_vertebrae": 16.0, "landmark_extent": 0.7, "landmark_score": 0.9}
    assert not check_spine(patchy, good_image).ok
    assert check_spine(patchy, good_image, landmark_features=seen).ok
    weak = {**seen, "landmark_vertebrae": 5.0}
    assert not check_spine(patchy, good_image, landmark_features=weak).ok
    noise = {"contrast": 0.3, "high_frequency": 0.8}  # the image's own signals are never waived
    result = check_spine(patchy, noise, landmark_features=seen)
    assert not result.ok and result.failed == ["high_frequency"]
