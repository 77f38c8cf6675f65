"""The shared preprocessing: letterbox geometry, intensity normalisation, mask round trips."""

from __future__ import annotations

import numpy as np
import pytest

from spine_core.preprocessing import (
    CropBox,
    Letterbox,
    crop_mask,
    crop_probabilities_to_letterbox,
    crop_probabilities_to_source,
    letterbox_mask,
    letterbox_probabilities_to_crop,
    mask_to_classifier_input,
    preprocess_crop,
    preprocess_image,
    probabilities_to_source_mask,
    resize,
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


# --------------------------------------------------------------------------- second-stage windows


def _tall_mask(h: int = 1000, w: int = 400) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[100:900, 150:250] = True  # an 800 x 100 "spine"
    return mask


def test_window_has_the_model_aspect_and_contains_the_widened_box():
    box = CropBox.around_mask(_tall_mask(), (1024, 256), margin=(0.05, 0.25))
    assert box is not None
    assert abs(box.height / box.width - 4.0) < 0.01
    # 5% of 800 above and below; the width grows to the aspect ratio, centred on the mask.
    assert box.top <= 60 and box.top + box.height >= 940
    assert box.height == 880 and box.width == 220
    assert box.left == 200 - 110
    assert CropBox.around_mask(np.zeros((50, 40), bool)) is None


def test_wide_mask_grows_the_window_height_instead():
    mask = np.zeros((300, 300), bool)
    mask[100:200, 20:280] = True
    box = CropBox.around_mask(mask, (1024, 256), margin=(0.0, 0.0))
    assert box is not None and box.width == 260 and box.height == 1040
    assert box.top < 0  # beyond the image: padded, see below


def test_window_beyond_the_image_is_zero_and_the_rest_normalised():
    rng = np.random.default_rng(0)
    image = rng.integers(50, 200, size=(300, 300)).astype(np.uint8)
    mask = np.zeros((300, 300), bool)
    mask[100:200, 20:280] = True
    box = CropBox.around_mask(mask, (256, 64), margin=(0.0, 0.0))
    x = preprocess_crop(image, box)
    assert x.shape == (256, 64) and x.dtype == np.float32
    y0, y1, x0, x1 = box.content_in_output()
    assert 0 < y0 < y1 < 256 and (x0, x1) == (0, 64)
    assert not x[:y0].any() and not x[y1:].any()
    inside = x[y0:y1]
    assert inside.min() >= 0.0 and inside.max() <= 1.0 and inside.std() > 0.1


def test_mask_round_trip_through_the_window():
    mask = _tall_mask()
    box = CropBox.around_mask(mask, (1024, 256))
    in_window = crop_mask(mask, box).astype(np.float32)
    back = crop_probabilities_to_source(in_window, box) >= 0.5
    assert back.shape == mask.shape
    assert 2 * (back & mask).sum() / (back.sum() + mask.sum()) > 0.99
    _, frame = preprocess_image(np.zeros(mask.shape, np.uint8), (512, 256))
    in_frame = crop_probabilities_to_letterbox(in_window, box, frame) >= 0.5
    expected = letterbox_mask(mask, (512, 256))
    assert 2 * (in_frame & expected).sum() / (in_frame.sum() + expected.sum()) > 0.97
    assert not in_frame[:, : frame.left].any()  # letterbox padding stays background


def test_first_stage_probabilities_resampled_into_the_window():
    mask = _tall_mask()
    box = CropBox.around_mask(mask, (1024, 256))
    _, frame = preprocess_image(np.zeros(mask.shape, np.uint8), (512, 256))
    in_frame = letterbox_mask(mask, (512, 256)).astype(np.float32)
    in_window = letterbox_probabilities_to_crop(in_frame, frame, box) >= 0.5
    expected = crop_mask(mask, box)
    assert in_window.shape == (1024, 256)
    assert 2 * (in_window & expected).sum() / (in_window.sum() + expected.sum()) > 0.97


def test_first_stage_probabilities_are_zero_where_the_window_leaves_the_image():
    mask = np.zeros((300, 300), bool)
    mask[100:200, 20:280] = True
    box = CropBox.around_mask(mask, (256, 64), margin=(0.0, 0.0))
    _, frame = preprocess_image(np.zeros(mask.shape, np.uint8), (128, 128))
    everywhere = np.ones((128, 128), np.float32)  # probability 1 over the whole frame, padding included
    in_window = letterbox_probabilities_to_crop(everywhere, frame, box)
    y0, y1, _, _ = box.content_in_output()
    assert np.all(in_window[y0 + 1 : y1 - 1] > 0.99)
    assert np.all(in_window[: max(0, y0 - 1)] == 0) and np.all(in_window[y1 + 1 :] == 0)


def _reference_crop(image: np.ndarray, box: CropBox) -> np.ndarray:
    """The definition preprocess_crop computes: cut the whole window, resize it, keep the image part."""
    from spine_core.preprocessing import _normalize_region, resize, to_grayscale

    out = np.array(resize(box.cut(to_grayscale(image)), (box.out_h, box.out_w)))
    y0, y1, x0, x1 = box.content_in_output()
    _normalize_region(out[y0:y1, x0:x1])
    outside = np.ones(out.shape, dtype=bool)
    outside[y0:y1, x0:x1] = False
    out[outside] = 0.0
    return out


@pytest.mark.parametrize(
    "rows, cols",
    [
        ((100, 900), (150, 250)),  # tall spine inside the film: the usual window
        ((0, 1000), (150, 250)),  # touching the top and bottom: the window leaves the image there
        ((100, 900), (0, 400)),  # as wide as the film: a window several times the image's height
        ((400, 420), (10, 390)),  # a flat stripe: the window leaves the image on all four sides
        ((5, 300), (300, 400)),  # in a corner
    ],
)
def test_window_computations_equal_their_definition(rows, cols):
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, size=(1000, 400)).astype(np.uint8)
    mask = np.zeros(image.shape, bool)
    mask[rows[0] : rows[1], cols[0] : cols[1]] = True
    box = CropBox.around_mask(mask, (1024, 256))
    np.testing.assert_allclose(preprocess_crop(image, box), _reference_crop(image, box), atol=2e-6)
    probabilities = rng.random((1024, 256)).astype(np.float32)
    window = resize(probabilities, (box.height, box.width))
    y0, y1, x0, x1 = box._overlap()
    reference = np.zeros(image.shape, np.float32)
    reference[y0:y1, x0:x1] = window[y0 - box.top : y1 - box.top, x0 - box.left : x1 - box.left]
    # Upsampling through Pillow's `box` rounds the sample positions differently in the last bits.
    np.testing.assert_allclose(crop_probabilities_to_source(probabilities, box), reference, atol=1e-4)
