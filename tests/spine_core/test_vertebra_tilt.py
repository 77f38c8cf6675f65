"""The tilt model's crops and turns (spine_core.vertebra_tilt) on a synthetic film with known tilts."""

from __future__ import annotations

import numpy as np
import pytest

from spine_core.vertebra_tilt import (
    CROP_HW,
    CROP_SPAN,
    MAX_TURN_DEG,
    TILT_SCALE,
    cobb_vectors,
    crop_grid,
    crops_for,
    refine_tilts,
    turn_vertebrae,
    vertebra_crops,
)


def _box(centre: tuple[float, float], width: float, height: float, tilt_deg: float) -> np.ndarray:
    """TL, TR, BL, BR of a width x height box turned by tilt_deg (image y down) about its centre."""
    level = np.array([[-width / 2, -height / 2], [width / 2, -height / 2], [-width / 2, height / 2], [width / 2, height / 2]])
    return turn_vertebrae((level + centre)[None], np.radians([tilt_deg]))[0]


def _film(boxes: list[np.ndarray], shape: tuple[int, int] = (400, 300)) -> np.ndarray:
    """Bright filled quadrilaterals on a dark film (8-bit, as a JPEG reads)."""
    rows, cols = np.mgrid[: shape[0], : shape[1]] + 0.5
    film = np.full(shape, 30, np.uint8)
    for tl, tr, bl, br in boxes:
        inside = np.ones(shape, bool)
        for a, b in ((tl, tr), (tr, br), (br, bl), (bl, tl)):  # clockwise on screen: the inside is to the right
            inside &= (b[0] - a[0]) * (rows - a[1]) - (b[1] - a[1]) * (cols - a[0]) >= 0
        film[inside] = 200
    return film


def _apparent_tilt_deg(crop: np.ndarray) -> float:
    """The bright region's long axis in a crop, degrees (image y down), from its second moments."""
    ys, xs = np.nonzero(crop > 0)
    cov = np.cov(np.stack([xs, ys]).astype(float))
    return float(np.degrees(0.5 * np.arctan2(2 * cov[0, 1], cov[0, 0] - cov[1, 1])))


def test_cobb_vectors_read_the_tilt_width_and_centre():
    corners = _box((150, 200), 80, 50, 12.0)[None]
    angle, width, centre = cobb_vectors(corners)
    assert np.degrees(angle[0]) == pytest.approx(12.0)
    assert width[0] == pytest.approx(80.0)
    assert centre[0] == pytest.approx([150, 200])


@pytest.mark.parametrize("tilt", [-20.0, 0.0, 8.0])
def test_a_vertebra_read_at_its_own_tilt_lies_level_in_its_crop(tilt):
    box = _box((150, 200), 90, 55, tilt)
    crop = crops_for(_film([box]), box[None])[0, ..., 0]
    assert crop.shape == CROP_HW
    assert crop.mean() == pytest.approx(0.0, abs=1e-4) and crop.std() == pytest.approx(1.0, abs=1e-3)
    assert abs(_apparent_tilt_deg(crop)) < 1.0


@pytest.mark.parametrize("error", [-6.0, 4.0])
def test_a_tilt_read_wrong_leaves_the_opposite_tilt_in_the_crop(error):
    """What the model is trained to answer: read at tilt + error, the vertebra lies at -error in the crop."""
    box = _box((150, 200), 90, 55, 10.0)
    angle, width, centre = cobb_vectors(box[None])
    crop = vertebra_crops(_film([box]), centre, width, angle + np.radians(error))[0]
    assert _apparent_tilt_deg(crop) == pytest.approx(-error, abs=1.0)


def test_turning_a_vertebra_changes_its_tilt_by_that_and_keeps_its_centre_and_shape():
    corners = np.stack([_box((100, 100), 80, 50, 3.0), _box((110, 180), 85, 52, -7.0)])
    turned = turn_vertebrae(corners, np.radians([5.0, -2.0]))
    before, after = cobb_vectors(corners), cobb_vectors(turned)
    assert np.degrees(after[0] - before[0]) == pytest.approx([5.0, -2.0])
    assert after[1] == pytest.approx(before[1]) and after[2] == pytest.approx(before[2])


def test_refine_turns_by_the_answer_in_tilt_units_and_never_beyond_the_cap():
    corners = np.stack([_box((100, 100), 80, 50, 0.0)] * 3)
    answers = np.array([[0.25], [-0.1], [9.0]])  # 2.5 and -1 degrees, and a wild answer
    tilts = np.degrees(cobb_vectors(refine_tilts(corners, answers))[0])
    assert tilts == pytest.approx([0.25 * TILT_SCALE, -0.1 * TILT_SCALE, MAX_TURN_DEG])


def test_crops_of_an_rgb_or_16_bit_film_match_the_gray_8_bit_one():
    box = _box((150, 200), 90, 55, 5.0)
    film = _film([box])
    gray = crops_for(film, box[None])
    assert np.allclose(crops_for(np.repeat(film[..., None], 3, axis=2), box[None]), gray, atol=1e-3)
    assert np.allclose(crops_for(film.astype(np.uint16) * 257, box[None]), gray, atol=1e-3)


def test_crops_are_the_bilinear_samples_scipy_gives_in_any_number():
    # OpenCV's remap cuts the crops; scipy's map_coordinates (order 1, edge repeated) is the reference sampler,
    # and more crops than one remap can take (its maps stop at 32767 rows) come out the same as one at a time.
    from scipy import ndimage

    boxes = [_box((150, 60 + 55 * i), 80 + 4 * i, 45, 6.0 * (i - 2)) for i in range(5)]
    film = _film(boxes)
    corners = np.stack(boxes)
    angles, widths, centres = cobb_vectors(corners)
    grid = crop_grid(centres, widths, angles, CROP_HW, CROP_SPAN)
    sampled = ndimage.map_coordinates(film.astype(np.float32), grid.reshape(2, -1), order=1, mode="nearest")
    reference = sampled.reshape(len(boxes), CROP_HW[0], 2, CROP_HW[1], 2).mean(axis=(2, 4))
    reference = (reference - reference.mean(axis=(1, 2), keepdims=True)) / reference.std(axis=(1, 2), keepdims=True)
    crops = crops_for(film, corners)[..., 0]
    assert np.abs(crops - reference).max() < 1e-3  # standardised units: the film's contrast is ~1
    many = np.repeat(corners, 41, axis=0)  # 205 crops: two remap groups
    assert np.allclose(crops_for(film, many), np.repeat(crops_for(film, corners), 41, axis=0), atol=1e-5)
