"""Decoding the landmark model's heads into 17 levelled vertebrae, and the two-pass reader (no model needed)."""

from __future__ import annotations

import numpy as np
import pytest

from spine_core.landmark_reader import (
    CORRIDOR_SIDE,
    FULL_BODY_SHARE,
    SERVED_BEYOND,
    SERVED_SIDE,
    frame_fill,
    frame_to_source,
    read_vertebrae,
    spine_corridor,
)
from spine_core.landmarks import (
    ENDS_CHANNEL,
    ENDS_WEIGHT,
    LEVEL_CHANNEL,
    LEVEL_SCALE,
    N_CHANNELS,
    OFFSET_SCALE,
    WIDTH_PROFILE,
    WINDOW_ENDS_WEIGHT,
    decode,
    quad_overlap,
)
from spine_core.preprocessing import UNET_INPUT_HW, Letterbox, preprocess_image

H, W = UNET_INPUT_HW


def spine(n: int, top: float = 40.0, step: float = 26.0, x: float = 128.0, scale: float = 1.0, tilt: float = 0.0) -> np.ndarray:
    """(n, 4, 2) corners of a straight column of vertebrae whose widths follow the T1..L5 profile (repeated beyond)."""
    out = []
    for i in range(n):
        cy = top + i * step * scale
        half_w = 14 * scale * WIDTH_PROFILE[min(i, len(WIDTH_PROFILE) - 1)]
        half_h = 0.36 * step * scale  # bodies ~3/4 of the step, the rest is the disc
        dx = np.tan(np.radians(tilt)) * half_w
        out.append(
            [
                [x - half_w, cy - half_h + dx],
                [x + half_w, cy - half_h - dx],
                [x - half_w, cy + half_h + dx],
                [x + half_w, cy + half_h - dx],
            ]
        )
    return np.array(out, dtype=np.float64)


def heads_for(
    corners: np.ndarray, scores: np.ndarray | None = None, hw: tuple[int, int] = (H, W), levels: np.ndarray | None = None
) -> np.ndarray:
    """What a perfect model would answer: a peak per vertebra (value = its score) and exact offsets around it.

    levels (per vertebra, in vertebrae, T1 = 0): the level head's reading around each peak; without them the
    heads are those of a model without the level head (11 channels)."""
    heads = np.zeros((*hw, N_CHANNELS if levels is not None else LEVEL_CHANNEL), dtype=np.float32)
    scores = np.ones(len(corners)) if scores is None else scores
    rows, cols = np.mgrid[0 : hw[0], 0 : hw[1]] + 0.5
    for i, (quad, score) in enumerate(zip(corners, scores, strict=True)):
        cx, cy = quad.mean(axis=0)
        d2 = (rows - cy) ** 2 + (cols - cx) ** 2
        heads[..., 0] = np.maximum(heads[..., 0], score * np.exp(-d2 / (2 * 2.5**2)))
        near = d2 <= 3.0**2
        offsets = (quad[None, None] - np.stack([cols, rows], -1)[:, :, None, :]) / OFFSET_SCALE
        heads[..., 1:9][near] = offsets.reshape(*hw, 8)[near]
        if levels is not None:
            heads[..., LEVEL_CHANNEL][near] = (levels[i] + 1) / LEVEL_SCALE
    return heads


def test_seventeen_clean_peaks_give_t1_to_l5_exactly():
    corners = spine(17)
    found = decode(heads_for(corners))
    assert found is not None and found.detected.all()
    np.testing.assert_allclose(found.corners, corners, atol=1e-3)
    assert found.notes == []


def test_a_missing_peak_is_interpolated_and_says_so():
    corners = spine(17)
    scores = np.ones(17)
    keep = np.ones(17, bool)
    keep[8] = False  # T9 not seen
    found = decode(heads_for(corners[keep], scores[keep]))
    assert found is not None
    assert not found.detected[8] and found.detected[keep].all()
    assert found.confidence[8] < 0.5
    np.testing.assert_allclose(found.corners[8], corners[8], atol=1.0)  # between its neighbours
    assert any("T9" in n for n in found.notes)


def test_off_chain_peaks_are_ignored():
    corners = spine(17)
    rib = np.array([[[20, 200], [40, 200], [20, 215], [40, 215]]], dtype=np.float64)  # far to the side
    found = decode(heads_for(np.concatenate([corners, rib]), np.r_[np.ones(17), 0.9]))
    np.testing.assert_allclose(found.corners, corners, atol=1e-3)
    assert any("off the spine" in n for n in found.notes)


def test_a_second_peak_between_two_vertebrae_does_not_shift_the_levels():
    """The heatmap peaks once more on the disc below a body, half a step down: the chain takes that peak (a
    peak much closer to either body never joins it), and without the rule it would count as a level and move
    every level below it up by one."""
    corners = spine(17, top=30.0, step=26.0)
    dup = corners[9].copy()
    dup[:, 1] += 13.0  # frame pixels below T10's centre: half a step
    chain = np.concatenate([corners[:10], dup[None], corners[10:]])
    scores = np.r_[np.ones(10), 0.7, np.ones(7)]
    found = decode(heads_for(chain, scores))
    assert found is not None and found.detected.all()
    np.testing.assert_allclose(found.corners, corners, atol=1e-3)
    assert any("second heatmap peak" in n for n in found.notes)


def test_short_gaps_of_real_vertebrae_are_not_taken_for_a_second_peak():
    """Two real gaps shorter than their neighbours (the foreshortened lumbosacral junction: 0.7 of a step each)
    keep their vertebra."""
    corners = spine(17, top=30.0, step=24.0)
    corners[16:, :, 1] -= 0.3 * 24.0  # L5 moved up: the L4-L5 gap is 0.7 of a step
    found = decode(heads_for(corners))
    assert found is not None and found.detected.all()
    np.testing.assert_allclose(found.corners, corners, atol=1e-3)
    assert not any("second heatmap peak" in n for n in found.notes)


def test_a_second_peak_on_a_body_is_dropped_where_the_gaps_around_it_are_uneven():
    """On a severe lumbar curve the gaps are uneven: a second peak on T10's body, with a wide T10-T11 disc below,
    has gaps adding up to 1.4 steps (over DUPLICATE_SPAN), but its body overlaps T10's by a quarter."""
    step = 26.0
    corners = spine(17, top=30.0, step=step)
    corners[10:, :, 1] += 0.4 * step  # the T10-T11 gap is 1.4 steps
    dup = corners[9].copy()
    dup[:, 1] += 0.55 * step  # past half a step, so the chain takes it
    chain = np.concatenate([corners[:10], dup[None], corners[10:]])
    assert 0.2 < quad_overlap(dup, corners[9]) < 0.3
    found = decode(heads_for(chain, np.r_[np.ones(10), 0.5, np.ones(7)]))
    assert found is not None and found.detected.all()
    np.testing.assert_allclose(found.corners, corners, atol=1e-3)
    assert any("second heatmap peak" in n for n in found.notes)


def test_real_bodies_whose_gaps_add_up_to_the_same_are_kept():
    """The foreshortened lumbosacral junction: L4's gaps are 0.7 of a step each (1.4 together, as on the
    marked full-body films), but L4's body does not overlap L3's or L5's."""
    step = 24.0
    corners = spine(17, top=30.0, step=step)
    corners[15:, :, 1] -= 0.3 * step
    corners[16:, :, 1] -= 0.3 * step
    assert quad_overlap(corners[15], corners[14]) < 0.1 and quad_overlap(corners[15], corners[16]) < 0.1
    found = decode(heads_for(corners))
    assert found is not None and found.detected.all()
    np.testing.assert_allclose(found.corners, corners, atol=1e-3)
    assert not any("second heatmap peak" in n for n in found.notes)


def test_quad_overlap_is_the_share_of_the_smaller_body():
    square = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], dtype=float)  # TL, TR, BL, BR
    assert quad_overlap(square, square) == pytest.approx(1.0)
    assert quad_overlap(square, square + np.array([0, 5])) == pytest.approx(0.5)
    assert quad_overlap(square, square + np.array([0, 20])) == 0.0
    small = np.array([[2, 2], [4, 2], [2, 4], [4, 4]], dtype=float)
    assert quad_overlap(square, small) == pytest.approx(1.0)  # of the smaller one
    crossed = square[[0, 1, 3, 2]]  # corners in the wrong order: its hull is the same square
    assert quad_overlap(square, crossed) == pytest.approx(1.0)
    assert quad_overlap(square, np.zeros((4, 2))) == 0.0


@pytest.mark.parametrize("extra_above, extra_below", [(2, 0), (0, 2), (3, 2)])
def test_levels_hold_with_cervical_and_sacral_peaks(extra_above, extra_below):
    """A full-body chain: weaker peaks on cervical vertebrae above T1 (narrower) and on the sacrum below L5
    (wider) must not shift the levels: T1 is still T1 and L5 still L5."""
    n = 17 + extra_above + extra_below
    step = 22.0
    top = 20.0
    chain = spine(n, top=top, step=step, scale=0.8)
    # widths: cervical narrower than T1..T3, sacral segments wider than L5 (as on films)
    centre_x = 128.0
    for i in range(n):
        level = i - extra_above
        rel = 0.62 if level < 0 else (WIDTH_PROFILE[level] if level < 17 else 1.55)
        half_w = 14 * 0.8 * rel
        chain[i, [0, 2], 0], chain[i, [1, 3], 0] = centre_x - half_w, centre_x + half_w
    scores = np.r_[np.full(extra_above, 0.35), np.full(17, 0.9), np.full(extra_below, 0.3)]
    found = decode(heads_for(chain, scores))
    assert found is not None
    np.testing.assert_allclose(found.corners, chain[extra_above : extra_above + 17], atol=1e-3)


@pytest.mark.parametrize("below", [True, False])
def test_the_ends_head_tells_c7_and_s1_from_t1_and_l5(below):
    """The hard case of a full-body film: one vertebra beyond T1..L5 has as strong a centre peak as they do
    (so the centre heatmap alone cannot say which 17 are T1..L5); the ends head marks the beyond one, and
    the levels follow it. The same heads without the ends channel (a 10-channel model) still decode."""
    chain = spine(18, top=20.0, step=24.0, scale=0.9)
    for i in range(18):  # equal widths: the width profile cannot decide either
        chain[i, [0, 2], 0], chain[i, [1, 3], 0] = 128.0 - 12.0, 128.0 + 12.0
    heads = heads_for(chain, np.full(18, 0.8))
    beyond = 17 if below else 0
    cx, cy = chain[beyond].mean(axis=0)
    rows, cols = np.mgrid[0:H, 0:W] + 0.5
    heads[..., ENDS_CHANNEL] = 0.9 * np.exp(-((rows - cy) ** 2 + (cols - cx) ** 2) / (2 * 2.5**2))
    found = decode(heads)
    assert found is not None
    expected = chain[:17] if below else chain[1:]
    np.testing.assert_allclose(found.corners, expected, atol=1e-3)
    assert decode(heads[..., :ENDS_CHANNEL]) is not None


def test_a_window_weighs_a_faint_ends_head_more_than_a_cropped_film():
    """A full-body window: C7's centre peak is stronger than L5's and the ends head marks C7 only faintly (as on
    the marked full-body films). At the cropped films' weight the levels take C7 in and leave L5 out; at the
    window's weight they take T1..L5."""
    chain = spine(18, top=20.0, step=24.0, scale=0.9)
    for i in range(18):  # equal widths: the width profile cannot decide
        chain[i, [0, 2], 0], chain[i, [1, 3], 0] = 128.0 - 12.0, 128.0 + 12.0
    heads = heads_for(chain, np.r_[0.5, np.full(16, 0.8), 0.35])  # C7, T1..L4, L5
    cx, cy = chain[0].mean(axis=0)
    rows, cols = np.mgrid[0:H, 0:W] + 0.5
    heads[..., ENDS_CHANNEL] = 0.06 * np.exp(-((rows - cy) ** 2 + (cols - cx) ** 2) / (2 * 2.5**2))
    cropped, window = decode(heads, ends_weight=ENDS_WEIGHT), decode(heads, ends_weight=WINDOW_ENDS_WEIGHT)
    assert cropped is not None and window is not None
    np.testing.assert_allclose(cropped.corners, chain[:17], atol=1e-3)
    np.testing.assert_allclose(window.corners, chain[1:], atol=1e-3)


def _equal_chain(n: int) -> np.ndarray:
    chain = spine(n, top=12.0, step=23.0, scale=0.9)
    for i in range(n):  # equal widths and (below) equal scores: only the level head can place the levels
        chain[i, [0, 2], 0], chain[i, [1, 3], 0] = 128.0 - 12.0, 128.0 + 12.0
    return chain


@pytest.mark.parametrize("above", [0, 1, 2])
def test_the_level_head_places_the_levels_on_a_chain_longer_than_seventeen(above):
    """A full-body chain of 20 equally strong, equally wide peaks (cervical above, sacral below): the level head's
    readings (off by up to 0.4 of a vertebra, one of them wildly wrong) decide which 17 are T1..L5."""
    chain = _equal_chain(20)
    truth = np.arange(20, dtype=float) - above  # T1 = 0
    readings = truth + np.random.default_rng(above).uniform(-0.4, 0.4, 20)
    readings[10] += 6.0  # one reading far off: it counts at most LEVEL_CAP and cannot move the placement alone
    found = decode(heads_for(chain, np.full(20, 0.8), levels=readings))
    assert found is not None and found.detected.all()
    np.testing.assert_allclose(found.corners, chain[above : above + 17], atol=1e-3)


def test_without_the_level_head_the_same_chain_is_placed_by_the_other_cues():
    chain = _equal_chain(20)
    assert decode(heads_for(chain, np.full(20, 0.8))) is not None  # 11 channels decode as before


def test_nothing_to_decode_is_none():
    assert decode(np.zeros((H, W, N_CHANNELS), np.float32)) is None


def test_frame_to_source_inverts_the_letterbox():
    box = Letterbox.fit(2000, 700, UNET_INPUT_HW)
    src = np.array([[350.0, 1000.0], [0.0, 0.0], [700.0, 2000.0]])
    frame = np.stack([box.left + src[:, 0] * box.content_w / 700, box.top + src[:, 1] * box.content_h / 2000], axis=1)
    np.testing.assert_allclose(frame_to_source(frame, box), src, atol=1e-6)


def _boxes_film(film_h: int, film_w: int, top: float) -> tuple[np.ndarray, np.ndarray]:
    """A film of 17 bright axis-aligned bodies (wider than tall, as on films) and their corners."""
    corners_src = spine(17, top=top, step=90.0, x=film_w / 2, scale=1.0)
    corners_src[..., 0] = film_w / 2 + (corners_src[..., 0] - film_w / 2) * 3.5
    pixels = np.zeros((film_h, film_w), np.uint8)
    for quad in corners_src:
        y0, y1 = int(quad[:, 1].min()), int(quad[:, 1].max())
        x0, x1 = int(quad[:, 0].min()), int(quad[:, 0].max())
        pixels[y0:y1, x0:x1] = 200
    return pixels, corners_src


def _boxes_model(seen: list[tuple[int, int]]):
    """A stand-in landmark model: each bright body of the frame is a vertebra."""

    def run(batch: np.ndarray) -> np.ndarray:
        seen.append(batch.shape[1:3])
        from scipy import ndimage

        labels, _n = ndimage.label(batch[0, ..., 0] > 0.5)
        boxes = ndimage.find_objects(labels)
        quads = np.array(
            [[[b[1].start, b[0].start], [b[1].stop, b[0].start], [b[1].start, b[0].stop], [b[1].stop, b[0].stop]] for b in boxes],
            dtype=np.float64,
        )
        return heads_for(quads[np.argsort(quads[:, 0, 1])])[None]

    return run


@pytest.mark.parametrize(
    ("film_hw", "top"),
    [((4000, 1500), 1200.0), ((1900, 1500), 150.0)],
    ids=["tall film, small spine", "wide film: the spine fills the film's height but not the frame's"],
)
def test_a_spine_small_in_the_frame_gets_a_second_pass_on_a_window(film_hw: tuple[int, int], top: float):
    """A skull-to-pelvis film, or a film wider than the frame (the letterbox shrinks the spine as much): the reader
    runs the model twice, and the answer is in original pixels of the film."""
    pixels, corners_src = _boxes_film(*film_hw, top)
    seen: list[tuple[int, int]] = []
    reading = read_vertebrae(_boxes_model(seen), pixels)
    share = (corners_src[-1, 2, 1] - corners_src[0, 0, 1]) / film_hw[0]
    assert share * frame_fill(Letterbox.fit(*film_hw, UNET_INPUT_HW)) < FULL_BODY_SHARE
    assert reading.passes == 2 and reading.window is not None and len(seen) == 2
    assert reading.frame is reading.window and reading.heads is not None and reading.heads.shape[:2] == (H, W)
    got = np.stack([v.corners for v in reading.vertebrae.vertebrae])
    # within a couple of original pixels per frame pixel of the window (the bodies are axis-aligned boxes here)
    scale = reading.window.height / reading.window.out_h
    assert np.abs(got - corners_src).max() < 2.5 * scale
    assert next(v.level for v in reading.vertebrae.vertebrae) == "T1"


def test_a_spine_that_fills_a_tall_film_is_read_in_one_pass():
    pixels, corners_src = _boxes_film(1900, 700, 150.0)  # taller than the frame's 2:1: the letterbox keeps its height
    seen: list[tuple[int, int]] = []
    reading = read_vertebrae(_boxes_model(seen), pixels)
    assert (corners_src[-1, 2, 1] - corners_src[0, 0, 1]) / 1900 >= FULL_BODY_SHARE
    assert reading.passes == 1 and reading.window is None and len(seen) == 1
    assert len(reading.vertebrae.vertebrae) == 17


def test_chain_offset_counts_a_whole_chain_shift_in_steps():
    from spine_core.landmark_metrics import chain_offset

    truth = spine(19)
    assert chain_offset(truth[:17], truth[:17]) == 0.0
    assert chain_offset(truth[1:18], truth[:17]) == pytest.approx(1.0)  # one level low: T1 on T2 ... L5 on S1
    assert chain_offset(truth[2:19], truth[:17]) == pytest.approx(2.0)


def test_the_served_band_stops_in_the_discs_beyond_t1_and_l5():
    """The served mask's band keeps T1's and L5's whole bodies and stops before C7's and S1's centres; the
    classifier's band (the default) reaches past them."""
    corners = spine(17, top=60.0, step=26.0)
    served = spine_corridor(corners, H, W, beyond=SERVED_BEYOND)
    wide = spine_corridor(corners, H, W)
    x = int(corners[0, :, 0].mean())
    t1_top, l5_bottom = int(corners[0, :2, 1].min()), int(np.ceil(corners[16, 2:, 1].max()))
    c7_centre, s1_centre = int(corners[0, :, 1].mean() - 26), int(corners[16, :, 1].mean() + 26)
    assert served[t1_top:l5_bottom, x].all()
    assert not served[: c7_centre + 1, x].any() and not served[s1_centre:, x].any()
    assert wide[c7_centre, x] and wide[s1_centre, x]


def test_the_served_band_keeps_a_tenth_of_a_width_beside_each_body():
    """Across the spine the served band reaches SERVED_SIDE of a body's width past its sides, the classifier's
    CORRIDOR_SIDE: a mask spreading beside the bodies is served only that far."""
    corners = spine(17, top=60.0, step=26.0)
    served = spine_corridor(corners, H, W, beyond=SERVED_BEYOND, side=SERVED_SIDE)
    wide = spine_corridor(corners, H, W)
    row = int(corners[8, :, 1].mean())
    left, right = corners[8, [0, 2], 0].mean(), corners[8, [1, 3], 0].mean()
    width = right - left
    columns = np.nonzero(served[row])[0]
    assert columns.min() == pytest.approx(left - SERVED_SIDE * width, abs=1.0)
    assert columns.max() == pytest.approx(right + SERVED_SIDE * width, abs=1.0)
    assert np.nonzero(wide[row])[0].max() == pytest.approx(right + CORRIDOR_SIDE * width, abs=1.0)
    assert SERVED_SIDE < CORRIDOR_SIDE


def test_a_first_pass_run_beforehand_gives_the_same_reading_and_run_serves_the_window_only():
    """The service runs the whole-film pass beside the U-Net and hands its heads in: the reading is the same,
    and the reader's own `run` is called once, for the full-body window."""
    film_h, film_w = 4000, 1500
    corners_src = spine(17, top=1200.0, step=90.0, x=750.0)
    corners_src[..., 0] = 750 + (corners_src[..., 0] - 750) * 3.5
    pixels = np.zeros((film_h, film_w), np.uint8)
    for quad in corners_src:
        pixels[int(quad[:, 1].min()) : int(quad[:, 1].max()), int(quad[:, 0].min()) : int(quad[:, 0].max())] = 200
    calls: list[tuple[int, int]] = []

    def run(batch: np.ndarray) -> np.ndarray:
        from scipy import ndimage

        calls.append(batch.shape[1:3])
        labels, _n = ndimage.label(batch[0, ..., 0] > 0.5)
        quads = np.array(
            [
                [[b[1].start, b[0].start], [b[1].stop, b[0].start], [b[1].start, b[0].stop], [b[1].stop, b[0].stop]]
                for b in ndimage.find_objects(labels)
            ],
            dtype=np.float64,
        )
        return heads_for(quads[np.argsort(quads[:, 0, 1])])[None]

    plain = read_vertebrae(run, pixels)
    frame = preprocess_image(pixels, UNET_INPUT_HW)
    heads = run(frame[0][None, ..., None])[0]
    calls.clear()
    handed = read_vertebrae(run, pixels, frame=frame, first_heads=heads)
    assert len(calls) == 1 and handed.passes == plain.passes == 2
    np.testing.assert_array_equal(handed.vertebrae.corners(), plain.vertebrae.corners())
