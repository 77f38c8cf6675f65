"""The spine as a vertical chain of vertebra-mask components, and a window placed around it.

A vertebral-body U-Net trained on films cropped to the spine also marks bone-like blobs elsewhere when it
sees a full-body film (skull base, clavicles, ribs, sacrum). The vertebral bodies form a chain: stacked top
to bottom, each one close below the previous and shifted sideways by less than a body's width. Blobs off
that chain are dropped; the chain's extent places a second, spine-sized window (`spine_window`).

numpy/scipy only: the service and training both use it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from spine_core.preprocessing import CropBox

# Defaults, in units of the typical component width (the median width of the kept components):
MAX_GAP = 1.5  # largest vertical gap between two chained components
MAX_SHIFT = 1.0  # largest sideways shift between the centres of two chained components
MIN_AREA = 0.02  # components under this share of the largest component's area are noise, never chained
MAX_COMPONENTS = 200  # only the largest ones are chained (a noise input must not make the search quadratic in specks)
SACRUM_HEIGHT = 2.0  # a blob this many times taller than the bodies above it ends the spine (`trim_sacrum`)
SACRUM_TAIL = 2.0  # ... when what is chained below it adds up to fewer bodies than this
SKULL_WIDTH = 1.5  # a blob this many times wider than the bodies below it starts the spine (`trim_skull`)


@dataclass(frozen=True)
class Component:
    """One connected component of a mask: its label, bounding box (end exclusive), centre and area."""

    label: int
    top: int
    bottom: int
    left: int
    right: int
    cy: float
    cx: float
    area: int

    @property
    def height(self) -> int:
        return self.bottom - self.top

    @property
    def width(self) -> int:
        return self.right - self.left


def mask_components(mask: np.ndarray, min_area: float = MIN_AREA) -> tuple[np.ndarray, list[Component]]:
    """(label image, components at least `min_area` x the largest one's area, at most MAX_COMPONENTS), top to bottom."""
    labels, n = ndimage.label(np.asarray(mask, dtype=bool))
    if n == 0:
        return labels, []
    areas = np.bincount(labels.ravel(), minlength=n + 1)
    ys, xs = np.indices(labels.shape, sparse=True)
    sum_y = np.bincount(labels.ravel(), weights=np.broadcast_to(ys, labels.shape).ravel(), minlength=n + 1)
    sum_x = np.bincount(labels.ravel(), weights=np.broadcast_to(xs, labels.shape).ravel(), minlength=n + 1)
    floor = min_area * areas[1:].max()
    found = []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        if sl is None or areas[i] < floor:
            continue
        found.append(
            Component(
                label=i,
                top=sl[0].start,
                bottom=sl[0].stop,
                left=sl[1].start,
                right=sl[1].stop,
                cy=float(sum_y[i] / areas[i]),
                cx=float(sum_x[i] / areas[i]),
                area=int(areas[i]),
            )
        )
    found = sorted(found, key=lambda c: -c.area)[:MAX_COMPONENTS]
    found.sort(key=lambda c: (c.top, c.cy))
    return labels, found


def _linked(upper: Component, lower: Component, max_gap: float, max_shift: float) -> bool:
    """Whether `lower` can follow `upper` in the chain (below it, near it, not beside it)."""
    if lower.cy <= upper.cy:
        return False
    gap = lower.top - upper.bottom
    # Tilted neighbours overlap a little in rows; more than half the smaller one means side by side.
    if gap < -0.5 * min(upper.height, lower.height):
        return False
    return gap <= max_gap and abs(lower.cx - upper.cx) <= max_shift


def component_unit(components: list[Component]) -> float:
    """The scale of a vertebral body in pixels: the median width of the components (0 when there are none)."""
    return float(np.median([c.width for c in components])) if components else 0.0


def best_chain(components: list[Component], max_gap: float = MAX_GAP, max_shift: float = MAX_SHIFT) -> list[Component]:
    """The best vertical chain of components, top to bottom.

    `max_gap` and `max_shift` are in units of the median component width (`component_unit`: the scale of a
    vertebral body, whatever the image's resolution). A chain scores the sum of its components' areas, each
    capped at the median component area: a large blob (skull base, sacrum, several bodies merged) counts
    as one body, so a long chain of bodies beats a few large blobs. Longest-path dynamic programme over the
    components sorted by centre.
    """
    if not components:
        return []
    unit = component_unit(components)
    gap, shift = max_gap * unit, max_shift * unit
    cap = float(np.median([c.area for c in components]))
    order = sorted(components, key=lambda c: c.cy)
    weight = [min(float(c.area), cap) for c in order]
    score = list(weight)
    previous: list[int | None] = [None] * len(order)
    for j, lower in enumerate(order):
        for i in range(j):
            if score[i] + weight[j] > score[j] and _linked(order[i], lower, gap, shift):
                score[j], previous[j] = score[i] + weight[j], i
    k: int | None = int(np.argmax(score))
    chain = []
    while k is not None:
        chain.append(order[k])
        k = previous[k]
    return chain[::-1]


@dataclass
class Chain:
    """The kept part of a mask and what it says about the spine."""

    mask: np.ndarray  # bool: only the chain's components
    unit: float  # median width of the chain's components, px (0 when empty)
    bodies: float  # effective number of vertebral bodies: the chain's score / the median component area

    @property
    def extent(self) -> tuple[int, int, int, int] | None:
        return chain_extent(self.mask)


def trim_sacrum(chain: list[Component], tall: float = SACRUM_HEIGHT, tail: float = SACRUM_TAIL) -> list[Component]:
    """The chain without a sacrum at its lower end.

    Seen at the spine's scale the model marks the sacrum as one tall blob below L5 (sometimes with a few
    small ones under it). The lowest component taller than `tall` x the median height of the three
    components above it, with fewer than `tail` bodies chained below it (areas capped at the median area),
    is taken as the sacrum: it and everything below it go. A chain shorter than four components is kept.
    """
    if len(chain) < 4:
        return chain
    cap = float(np.median([c.area for c in chain]))
    for k in range(len(chain) - 1, 2, -1):
        above = float(np.median([c.height for c in chain[k - 3 : k]]))
        if chain[k].height > tall * above:
            below = sum(min(c.area, cap) for c in chain[k + 1 :]) / cap
            return chain[:k] if below < tail else chain
    return chain


def trim_skull(chain: list[Component], wide: float = SKULL_WIDTH, tail: float = SACRUM_TAIL) -> list[Component]:
    """The chain without a blob of the skull base at its upper end.

    The highest component wider than `wide` x the median width of the three components below it, with
    fewer than `tail` bodies chained above it, is taken as the skull: it and everything above it go (the
    model does not mark the cervical vertebrae, so the thoracic spine starts below a gap). A chain shorter
    than four components is kept.
    """
    if len(chain) < 4:
        return chain
    cap = float(np.median([c.area for c in chain]))
    for k in range(len(chain) - 3):
        below = float(np.median([c.width for c in chain[k + 1 : k + 4]]))
        if chain[k].width > wide * below:
            above = sum(min(c.area, cap) for c in chain[:k]) / cap
            return chain[k + 1 :] if above < tail else chain
    return chain


def keep_chain(
    mask: np.ndarray,
    max_gap: float = MAX_GAP,
    max_shift: float = MAX_SHIFT,
    min_area: float = MIN_AREA,
    trim_ends: bool = False,
) -> Chain:
    """The mask with only the components of its best vertical chain (`best_chain`), less skull and sacrum if asked."""
    labels, components = mask_components(mask, min_area)
    chain = best_chain(components, max_gap, max_shift)
    if trim_ends:
        chain = trim_skull(trim_sacrum(chain))
    if not chain:
        return Chain(np.zeros(labels.shape, dtype=bool), 0.0, 0.0)
    keep = np.zeros(int(labels.max()) + 1, dtype=bool)
    keep[[c.label for c in chain]] = True
    cap = float(np.median([c.area for c in components]))
    return Chain(keep[labels], component_unit(chain), sum(min(c.area, cap) for c in chain) / cap)


def chain_extent(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, bottom, left, right) of a mask's pixels, end exclusive; None when empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def spine_window(
    chain_mask: np.ndarray,
    out_hw: tuple[int, int],
    up: float,
    down: float,
    side: float,
) -> CropBox | None:
    """A window of the model input's aspect ratio around a chain, extended by `up` / `down` pixels.

    A first pass on a full-body film misses the upper thoracic vertebrae, so `up` is the larger; `side` is
    the share of the chain's width added on each side. The window then grows to the input's aspect ratio
    around its centre; beyond the image it is zero (as in the letterbox). None when the mask is empty.
    """
    extent = chain_extent(chain_mask)
    if extent is None:
        return None
    top, bottom, left, right = extent
    y0, y1 = top - up, bottom + down
    height = y1 - y0
    width = (right - left) * (1 + 2 * side)
    aspect = out_hw[0] / out_hw[1]
    height, width = max(height, width * aspect), max(width, height / aspect)
    cy, cx = (y0 + y1) / 2, (left + right) / 2
    return CropBox(
        src_h=chain_mask.shape[0],
        src_w=chain_mask.shape[1],
        top=round(cy - height / 2),
        left=round(cx - width / 2),
        height=max(1, round(height)),
        width=max(1, round(width)),
        out_h=out_hw[0],
        out_w=out_hw[1],
    )
