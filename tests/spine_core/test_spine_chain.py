"""spine_core.spine_chain on synthetic masks: a chain of vertebra-like boxes with blobs off it."""

from __future__ import annotations

import numpy as np
import pytest

from spine_core.spine_chain import MAX_COMPONENTS, best_chain, chain_extent, keep_chain, mask_components, spine_window

BODY_H, BODY_W, DISC = 30, 40, 10


def spine_boxes(n: int = 12, top: int = 300, left: int = 200, drift: int = 3) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of n vertebra-like boxes stacked with a small sideways drift (a gentle curve)."""
    return [
        (top + i * (BODY_H + DISC), top + i * (BODY_H + DISC) + BODY_H, left + i * drift, left + i * drift + BODY_W)
        for i in range(n)
    ]


def paint(shape: tuple[int, int], boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for y0, y1, x0, x1 in boxes:
        mask[y0:y1, x0:x1] = True
    return mask


SKULL = (40, 160, 170, 290)  # a large blob far above the spine
RIB = (420, 440, 330, 420)  # beside the spine, level with a body
PELVIS = (820, 900, 40, 120)  # low and far to the side


def test_blobs_off_the_chain_are_dropped() -> None:
    spine = spine_boxes()
    mask = paint((1000, 500), [*spine, SKULL, RIB, PELVIS])
    chain = keep_chain(mask)
    assert np.array_equal(chain.mask, paint((1000, 500), spine))
    assert chain.unit == pytest.approx(BODY_W)
    assert chain.bodies == pytest.approx(len(spine))


def test_a_long_chain_beats_a_few_large_blobs() -> None:
    """Area capped at the median body: three skull-sized blobs in a column lose to twelve bodies."""
    spine = spine_boxes()
    skull_column = [(10 + k * 80, 10 + k * 80 + 70, 20, 140) for k in range(3)]
    chain = keep_chain(paint((1000, 500), [*spine, *skull_column]))
    assert chain_extent(chain.mask) == chain_extent(paint((1000, 500), spine))


def test_a_gap_wider_than_the_limit_splits_the_chain() -> None:
    upper = spine_boxes(n=4, top=100)
    lower = spine_boxes(n=8, top=100 + 4 * (BODY_H + DISC) + 4 * BODY_W)  # a gap of ~4 body widths
    mask = paint((1000, 500), [*upper, *lower])
    assert np.array_equal(keep_chain(mask, max_gap=1.5).mask, paint((1000, 500), lower))
    assert np.array_equal(keep_chain(mask, max_gap=5.0).mask, mask)  # a looser limit bridges it


def test_components_under_the_area_floor_are_ignored() -> None:
    mask = paint((200, 200), [(10, 60, 10, 60), (100, 102, 100, 102)])
    _, components = mask_components(mask, min_area=0.02)
    assert [c.area for c in components] == [2500]
    assert best_chain([]) == []


def test_empty_mask_gives_an_empty_chain_and_no_window() -> None:
    chain = keep_chain(np.zeros((50, 40), dtype=bool))
    assert not chain.mask.any() and chain.bodies == 0 and chain.extent is None
    assert spine_window(chain.mask, (512, 256), 10, 10, 0.5) is None


def test_window_extends_the_chain_and_keeps_the_input_aspect() -> None:
    spine = spine_boxes(n=6, top=400, drift=0)
    mask = paint((1200, 600), spine)
    top, bottom, left, right = chain_extent(mask)
    box = spine_window(mask, (512, 256), up=200, down=50, side=0.5)
    assert box is not None
    assert box.height == 2 * box.width  # the model input's aspect ratio: an isotropic resize
    assert box.top == top - 200 and box.top + box.height == bottom + 50  # taller than wide: the height decides
    assert box.left + box.width / 2 == pytest.approx((left + right) / 2, abs=1)
    assert (box.src_h, box.src_w, box.out_h, box.out_w) == (1200, 600, 512, 256)


def test_window_of_a_wide_chain_grows_in_height_around_its_centre() -> None:
    mask = paint((400, 600), [(100, 140, 100, 500)])  # wider than tall
    box = spine_window(mask, (512, 256), up=0, down=0, side=0.25)
    assert box is not None
    assert box.width == 600 and box.height == 1200  # 400 px wide + 25 % each side; then 2:1
    assert box.top + box.height / 2 == pytest.approx(120, abs=1)


def test_a_tall_blob_ending_the_chain_is_trimmed_as_the_sacrum() -> None:
    spine = spine_boxes(n=8, drift=0)
    last = spine[-1]
    sacrum = (last[1] + DISC, last[1] + DISC + 4 * BODY_H, 190, 250)  # four bodies tall, a bit wider
    coccyx = (sacrum[1] + DISC, sacrum[1] + DISC + 12, 210, 230)  # a small blob under it
    mask = paint((1000, 500), [*spine, sacrum, coccyx])
    assert np.array_equal(keep_chain(mask).mask, mask)  # kept unless asked
    assert np.array_equal(keep_chain(mask, trim_ends=True).mask, paint((1000, 500), spine))


def test_merged_bodies_in_the_middle_are_not_the_sacrum() -> None:
    spine = spine_boxes(n=10, drift=0)
    merged = (spine[3][0], spine[5][1], spine[3][2], spine[3][3])  # three bodies fused into one blob
    mask = paint((1000, 500), [*spine, merged])
    assert np.array_equal(keep_chain(mask, trim_ends=True).mask, mask)


def test_a_wide_blob_starting_the_chain_is_trimmed_as_the_skull() -> None:
    spine = spine_boxes(n=8, top=300, drift=0)
    skull = (200, 290, 150, 290)  # just above the first body (within the gap limit), 3.5 bodies wide
    mask = paint((1000, 500), [skull, *spine])
    assert np.array_equal(keep_chain(mask).mask, mask)
    assert np.array_equal(keep_chain(mask, trim_ends=True).mask, paint((1000, 500), spine))


def test_a_mask_of_specks_is_searched_among_its_largest_components_only() -> None:
    specks = np.zeros((600, 600), dtype=bool)
    specks[::6, ::6] = True  # 10,000 one-pixel components, as a noise input might give
    _, components = mask_components(specks)
    assert len(components) == MAX_COMPONENTS
    assert keep_chain(specks).mask.sum() <= MAX_COMPONENTS
