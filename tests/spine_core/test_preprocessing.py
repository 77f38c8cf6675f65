"""The shared preprocessing: letterbox geometry, intensity normalisation, mask round trips."""

from __future__ import annotations

import numpy as np
import pytest

from spine_core.preprocessing import (
    Letterbox,
    letterbox_mask,
    mask_to_classifier_input,
    preprocess_image,
    probabilities_to_source_mask,
    to_grayscale,
)


def test_letterbox_keeps_aspect_ratio_and_centres_tall_image():
    box = Letterbox.fit(2000, 500, (512, 256))  # 4:1 image into a 2:1 frame: height limits
    assert (box.content_h, box.content_w) == (512, 128)
    assert (box.top, box.left) == (0, 64)


def test_letterbox_wide_image_is_padded_top_and_bottom():
    box = Letterbox.fit(100, 400, (512, 256))
    assert (box.content_h, box.content_w) == (64, 256)
    assert box.top == (512 - 64) // 2 and box.left == 0


@pytest.mark.parametrize("dtype,scale", [(np.uint8, 255), (np.uint16, 65535), (np.float32, 1.0)])
def test_preprocess_any_dtype_lands_in_unit_range_with_zero_padding(dtype, scale):
    rng = np.random.default_rng(0)
    image = (rng.random((300, 100)) * scale).astype(dtype)
    x, box = preprocess_image(image, (64, 32))
    assert x.shape == (64, 32) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0
    content = x[box.top : box.top + box.content_h, box.left : box.left + box.content_w]
    assert content.max() == pytest.approx(1.0) and content.min() == pytest.approx(0.0)
    pad = np.ones_like(x, bool)
    pad[box.top : box.top + box.content_h, box.left : box.left + box.content_w] = False
    assert not x[pad].any()


def test_uint8_and_uint16_versions_of_one_image_preprocess_alike():
    rng = np.random.default_rng(1)
    img8 = rng.integers(0, 256, (200, 90), dtype=np.uint8)
    x8, _ = preprocess_image(img8, (64, 32))
    x16, _ = preprocess_image(img8.astype(np.uint16) * 257, (64, 32))
    assert np.abs(x8 - x16).max() < 1e-4


def test_rgb_rgba_and_gray_give_same_input_for_a_gray_picture():
    gray = np.random.default_rng(2).integers(0, 256, (50, 40), dtype=np.uint8)
    rgb = np.stack([gray] * 3, axis=-1)
    rgba = np.concatenate([rgb, np.full((50, 40, 1), 7, np.uint8)], axis=-1)
    for image in (rgb, rgba, gray[..., None]):
        assert np.allclose(to_grayscale(image), gray, atol=1e-3)


def test_constant_image_does_not_divide_by_zero():
    x, _ = preprocess_image(np.full((40, 20), 77, np.uint8), (64, 32))
    assert np.isfinite(x).all() and not x.any()


def test_mask_round_trip_through_the_model_frame():
    mask = np.zeros((1000, 400), bool)
    mask[200:800, 150:250] = True
    frame = letterbox_mask(mask, (512, 256))
    back = probabilities_to_source_mask(frame.astype(np.float32), Letterbox.fit(1000, 400, (512, 256)))
    assert back.shape == mask.shape
    inter = np.logical_and(back, mask).sum()
    assert 2 * inter / (back.sum() + mask.sum()) > 0.98


def test_classifier_input_is_area_fraction():
    frame = np.zeros((512, 256), bool)
    frame[:, :128] = True
    x = mask_to_classifier_input(frame, (128, 64))
    assert x.shape == (128, 64)
    assert np.allclose(x[:, :32], 1.0) and np.allclose(x[:, 32:], 0.0)


def test_grayscale_rejects_nonsense_shapes():
    with pytest.raises(ValueError):
        to_grayscale(np.zeros((4, 4, 2)))
    with pytest.raises(ValueError):
        to_grayscale(np.zeros((4,)))
