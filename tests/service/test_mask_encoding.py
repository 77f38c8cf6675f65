from __future__ import annotations

import numpy as np
import pytest
from spine_service_testlib import decode_png_mask, decode_rle, spine_image

from spine_engine.masks import bbox_xywh, mask_to_png, mask_to_rle

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # pycocotools on numpy 2


def _masks() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    corner = np.zeros((7, 5), bool)
    corner[0, 0] = True
    return [
        rng.random((37, 23)) > 0.6,
        np.zeros((10, 4), bool),
        np.ones((3, 9), bool),
        corner,
        spine_image(50, 20) > 120,
    ]


@pytest.mark.parametrize("mask", _masks(), ids=["random", "empty", "full", "first-pixel", "blocks"])
def test_rle_is_coco_and_round_trips_through_pycocotools(mask: np.ndarray) -> None:
    rle = mask_to_rle(mask)
    assert rle["size"] == list(mask.shape)
    assert sum(rle["counts"]) == mask.size
    if mask.flat[0]:
        assert rle["counts"][0] == 0  # counts start with background, even when there is none
    np.testing.assert_array_equal(decode_rle(rle), mask)


def test_rle_is_column_major() -> None:
    mask = np.array([[1, 1], [0, 0]], bool)  # column-major order: 1, 0, 1, 0
    assert mask_to_rle(mask)["counts"] == [0, 1, 1, 1, 1]


@pytest.mark.parametrize("mask", _masks(), ids=["random", "empty", "full", "first-pixel", "blocks"])
def test_png_round_trip(mask: np.ndarray) -> None:
    np.testing.assert_array_equal(decode_png_mask(mask_to_png(mask)), mask)


def test_bbox() -> None:
    mask = np.zeros((20, 10), bool)
    mask[3:8, 2:5] = True
    assert bbox_xywh(mask) == [2, 3, 3, 5]
    assert bbox_xywh(np.zeros((4, 4), bool)) is None
