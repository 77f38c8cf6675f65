"""Corner extraction from synthetic vertebra masks with known geometry."""

from __future__ import annotations

import numpy as np
import pytest

from spine_core.cobb import LEVELS, N_VERTEBRAE, cobb_angles
from spine_core.landmark_metrics import corner_error_px, fill_vertebrae
from spine_core.vertebrae import find_vertebrae

HEIGHT, WIDTH = 1400, 600


def spine_corners(tilts_deg: list[float], pitch: float = 70.0, size: tuple[float, float] = (70.0, 48.0)) -> np.ndarray:
    """(17, 4, 2) TL, TR, BL, BR of rectangles down the middle, each rotated by its tilt (+ = right side lower)."""
    corners = []
    for i, tilt in enumerate(tilts_deg):
        t = np.radians(tilt)
        across, down = np.array([np.cos(t), np.sin(t)]), np.array([-np.sin(t), np.cos(t)])
        centre = np.array([WIDTH / 2, 120.0 + i * pitch])
        w, h = size[0] / 2, size[1] / 2
        corners.append([centre - w * across - h * down, centre + w * across - h * down,
                        centre - w * across + h * down, centre + w * across + h * down])  # fmt: skip
    return np.array(corners)


def test_straight_spine_gives_17_levels_and_its_corners() -> None:
    truth = spine_corners([0.0] * N_VERTEBRAE)
    result = find_vertebrae(fill_vertebrae(truth, HEIGHT, WIDTH))
    assert result.complete and result.reason is None
    assert [v.level for v in result.vertebrae] == list(LEVELS)
    assert corner_error_px(result.corners(), truth) < 1.5
    assert min(v.confidence for v in result.vertebrae) > 0.95
    assert cobb_angles(result.corners(), HEIGHT).max_deg < 1.0


@pytest.mark.parametrize("tilt", [8.0, 20.0])
def test_known_tilts_come_back_as_the_cobb_angle(tilt: float) -> None:
    tilts = [0.0] * N_VERTEBRAE
    tilts[4], tilts[10] = tilt, -tilt  # T5 and T11 tilted opposite ways: a 2*tilt curve between them
    truth = spine_corners(tilts)
    result = find_vertebrae(fill_vertebrae(truth, HEIGHT, WIDTH))
    cobb = cobb_angles(result.corners(), HEIGHT)
    assert cobb.max_deg == pytest.approx(2 * tilt, abs=1.5)
    assert (cobb.curves[0].upper_end, cobb.curves[0].lower_end) == ("T5", "T11")
    assert corner_error_px(result.corners(), truth) < 2.0


def test_off_chain_blobs_and_specks_are_not_vertebrae() -> None:
    truth = spine_corners([0.0] * N_VERTEBRAE)
    mask = fill_vertebrae(truth, HEIGHT, WIDTH)
    mask[400:460, 20:80] = True  # a blob far off the spine (a hand, a rib end)
    mask[900:903, 290:293] = True  # a speck between two vertebrae... inside T12's band is fine too
    result = find_vertebrae(mask)
    assert result.complete
    assert corner_error_px(result.corners(), truth) < 1.5


def test_two_merged_vertebrae_are_cut_apart() -> None:
    truth = spine_corners([0.0] * N_VERTEBRAE)
    mask = fill_vertebrae(truth, HEIGHT, WIDTH)
    # Bridge T7 and T8 with a narrow strip across the disc: one component holding two vertebrae.
    gap_top, gap_bottom = int(truth[6, 2, 1]), int(truth[7, 0, 1]) + 1
    mask[gap_top : gap_bottom + 1, WIDTH // 2 - 10 : WIDTH // 2 + 10] = True
    result = find_vertebrae(mask)
    assert result.complete, result.reason
    split = [v.level for v in result.vertebrae if v.split]
    assert split == ["T7", "T8"]
    assert corner_error_px(result.corners(), truth) < 4.0


def test_a_missing_vertebra_gives_no_angle_and_says_why() -> None:
    truth = spine_corners([0.0] * N_VERTEBRAE)
    mask = fill_vertebrae(np.delete(truth, 0, axis=0), HEIGHT, WIDTH)  # T1 not segmented
    result = find_vertebrae(mask)
    assert not result.complete
    assert result.corners() is None
    assert "16 of the 17" in result.reason
    assert result.vertebrae[-1].level == "L5"  # counted from the lumbar end


def test_an_empty_mask_finds_nothing() -> None:
    result = find_vertebrae(np.zeros((200, 100), dtype=bool))
    assert result.vertebrae == [] and not result.complete and result.reason
    with pytest.raises(ValueError, match="2-D"):
        find_vertebrae(np.zeros((2, 3, 4), dtype=bool))


def test_a_vertebra_missing_in_the_middle_is_located() -> None:
    truth = spine_corners([0.0] * N_VERTEBRAE)
    result = find_vertebrae(fill_vertebrae(np.delete(truth, 8, axis=0), HEIGHT, WIDTH))  # T9 not segmented
    assert result.corners() is None
    assert "between found vertebrae 8 and 9 (from the top)" in result.reason


def test_results_serialise_to_json_for_the_response() -> None:
    import json

    tilts = [0.0] * N_VERTEBRAE
    tilts[4], tilts[10] = 10.0, -10.0
    result = find_vertebrae(fill_vertebrae(spine_corners(tilts), HEIGHT, WIDTH))
    cobb = cobb_angles(result.corners(), HEIGHT, result.confidences())
    payload = json.loads(json.dumps({"cobb": cobb.to_dict(), "vertebrae": [v.to_dict() for v in result.vertebrae]}))
    assert payload["cobb"]["curves"][0]["upper_end"] == "T5" and payload["cobb"]["reliable"] is True
    assert payload["cobb"]["severity"] == "mild"
    first = payload["vertebrae"][0]
    assert first["level"] == "T1" and len(first["corners"]) == 4 and 0.9 < first["confidence"] <= 1.0


def test_pieces_of_a_merged_run_take_their_tilt_from_the_runs_real_endplates() -> None:
    tilts = [0.0] * N_VERTEBRAE
    tilts[5:10] = [3.0, 6.0, 9.0, 12.0, 15.0]  # T6..T10 turning steadily
    truth = spine_corners(tilts, size=(70.0, 60.0))  # discs a sixth of a body's height, as in the thorax
    mask = fill_vertebrae(truth, HEIGHT, WIDTH)
    # Fill the discs between T7, T8 and T9: one blob of three without notches, so the cuts cannot
    # find the discs' tilt and the pieces must take it from the run's top and bottom endplates.
    for upper in (6, 7):
        bl, br, tl, tr = truth[upper, 2], truth[upper, 3], truth[upper + 1, 0], truth[upper + 1, 1]
        mask |= fill_vertebrae(np.array([[bl, br, tl, tr]]), HEIGHT, WIDTH)
    result = find_vertebrae(mask)
    assert result.complete, result.reason
    assert [v.level for v in result.vertebrae if v.split] == ["T7", "T8", "T9"]
    sides = [((c[1] + c[3]) - (c[0] + c[2])) / 2 for c in result.corners()]  # left-to-right side midpoints
    found = np.degrees([np.arctan2(d[1], d[0]) for d in sides])
    assert np.abs(found[6:9] - np.array(tilts[6:9])).max() < 2.5
    assert all(v.confidence < 0.8 for v in result.vertebrae if v.split)


@pytest.mark.parametrize("density", [0.001, 0.05, 0.5, 0.97])
def test_arbitrary_masks_give_a_result_or_a_reason_never_an_error(density: float) -> None:
    rng = np.random.default_rng(int(density * 1000))
    for _ in range(3):
        mask = rng.random((300, 120)) < density
        result = find_vertebrae(mask)
        assert result.complete or result.reason
        for v in result.vertebrae:
            assert np.all(np.isfinite(v.corners)) and 0.0 <= v.confidence <= 1.0
