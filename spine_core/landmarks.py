"""The landmark model's output -> the 17 vertebrae T1..L5, four corners and a confidence each.

The model (`spine-train landmarks`) answers one map per frame pixel with `N_CHANNELS` channels:

- channel 0, a vertebra-centre heatmap (sigmoid): a Gaussian peak at the centre of each of T1..L5;
- channels 1..8, the four corners (TL, TR, BL, BR) as (dx, dy) offsets from the pixel's centre, divided
  by `OFFSET_SCALE`, learnt around each centre;
- channel 9, the vertebral-body mask (sigmoid), an auxiliary head kept from the `Ap_Vertebra` weights;
- channel 10 (models trained since it was added), an "ends" heatmap: a peak at the centre of C7 and of S1,
  the vertebrae just beyond T1..L5, which look much like them; it tells the level placement which of the
  chain's end peaks lie outside T1..L5. A 10-channel model (before it) is decoded without it;
- channel 11 (models with the level head), which vertebra a centre is: 0 at C7, (k + 1) / 18 at the k-th of
  T1..L5 (T1 = 0), 1 at S1; read at each chain peak, it votes for where the 17 levels lie on the chain.

Decoding is the "vertebra-focused" idea (Yi et al. 2020): peaks of the heatmap are the vertebrae, the
offsets read at each peak are its corners. What is added here is the counting: the peaks are linked into
one chain down the spine, and the 17 levels are placed on it by score and by the vertebrae's sizes
(they grow from T1 to L5), so that a missing or an extra peak does not shift the levels; a level without
its own peak is interpolated between its neighbours and says so with a low confidence.
Everything is numpy/scipy on the model's frame: no per-pixel Python loops.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import ndimage

from spine_core.cobb import LEVELS, N_VERTEBRAE
from spine_core.vertebra_ends import ENDS_CLASSES, ends_class, placement_log_likelihood

N_CHANNELS = 12
HEATMAP_CHANNEL = 0
OFFSET_CHANNELS = slice(1, 9)
MASK_CHANNEL = 9
ENDS_CHANNEL = 10
LEVEL_CHANNEL = 11
LEVEL_SCALE = 18.0  # the level channel's unit: C7 at 0, S1 at 1, one vertebra 1/18
ACCEPTED_CHANNELS = (10, 11, N_CHANNELS)  # models exported before the ends or the level head still load and decode
OFFSET_SCALE = 16.0  # frame pixels per unit of the offset channels (keeps the regression targets near 1)
VOTE_RADIUS = 2  # frame pixels around a peak whose offsets vote for its corners (the offsets are learnt within 2.5)
PEAK_WINDOW = 5  # frame pixels: a peak is the maximum of its 5x5 neighbourhood
MIN_PEAK = 0.08  # heatmap value below which a local maximum is not a vertebra candidate
SHAPE_WEIGHT = 0.5  # level placement: weight of the widths' misfit to WIDTH_PROFILE against the peaks' scores
ENDS_WEIGHT = 1.0  # level placement: weight of the ends head (C7 / S1) against the centre heatmap's scores
# The same in a full-body film's window, where C7 and S1 are on the frame whole and the ends head marks them; on
# cropped films they are cut, and 2 there lowered the validation films' level accuracy (0.80 -> 0.77). On the 45
# marked full-body films T1 came right on 36 at 1, 38 at 2, 39 at 3-4 (leave-one-out choice of the weight: 38).
WINDOW_ENDS_WEIGHT = 3.0
LEVEL_WEIGHT = 1.0  # level placement: cost per vertebra of disagreement with the level head, per chain peak
# level placement: weight of the ends model's log-likelihood (spine_core.vertebra_ends), when one is served
ENDS_MODEL_WEIGHT = 1.0
LEVEL_CAP = 3.0  # vertebrae: one peak's disagreement counts at most this much (a wild reading cannot decide alone)
INTERPOLATED_CONFIDENCE = 0.3  # a level placed between (or beyond) detected neighbours
# A peak whose two gaps, to the peaks above and below, add up to less than this many of the chain's local
# steps is a second peak on one body (or on a disc between two): a body between two others spans two steps.
# Two real gaps at the foreshortened lumbosacral junction measured 0.69-0.74 of their neighbours each (1.39
# together) on the marked full-body films; duplicates measured 0.96-1.20 together.
DUPLICATE_SPAN = 1.25
# Below OVERLAP_SPAN, a peak whose body overlaps a neighbour's by more than DUPLICATE_OVERLAP of the smaller body is
# a second peak too: two bodies with a disc between them do not overlap, and on a severe lumbar curve the gaps
# around a duplicate are uneven enough to pass DUPLICATE_SPAN (01-July-2019-50: spans 1.33-1.53, overlaps 0.23-0.33,
# L5 read three vertebrae high). Set from that film; checked on the AASCE films (docs/measurement.md).
OVERLAP_SPAN = 1.5
DUPLICATE_OVERLAP = 0.2
# Relative width of T1..L5 (mean over the AASCE training labels, each film's widths divided by its mean; the
# vertebrae top to bottom since 2026-12-05):
# `python -m training.landmarks profile ../shared/data/aasce-train` prints it.
WIDTH_PROFILE = np.array(
    [0.933, 0.866, 0.814, 0.798, 0.813, 0.84, 0.875, 0.907, 0.94, 0.98, 1.033, 1.086, 1.124, 1.151, 1.202, 1.272, 1.365]
)


@dataclass(frozen=True)
class Landmarks:
    """17 vertebrae in the frame the heads were computed on (pixel edges at integers)."""

    corners: np.ndarray  # (17, 4, 2) x, y of TL, TR, BL, BR
    confidence: np.ndarray  # (17,) in [0, 1]: the heatmap's peak, or INTERPOLATED_CONFIDENCE
    detected: np.ndarray  # (17,) bool: the level has its own peak
    notes: list[str] = field(default_factory=list)

    @property
    def centres(self) -> np.ndarray:
        return self.corners.mean(axis=1)


def find_peaks(heatmap: np.ndarray, min_peak: float = MIN_PEAK) -> tuple[np.ndarray, np.ndarray]:
    """Local maxima of the heatmap -> ((k, 2) integer (row, col), (k,) score), top to bottom."""
    maxed = ndimage.maximum_filter(heatmap, size=PEAK_WINDOW, mode="constant")
    rows, cols = np.nonzero((heatmap == maxed) & (heatmap >= min_peak))  # row-major: already top to bottom
    values = heatmap[rows, cols]
    # Equal neighbours (a centre between two pixels) are one peak: the first of them in row-major order.
    reach = PEAK_WINDOW // 2
    near = (np.abs(rows[:, None] - rows[None, :]) <= reach) & (np.abs(cols[:, None] - cols[None, :]) <= reach)
    tie = near & (values[:, None] == values[None, :]) & np.tri(len(rows), k=-1, dtype=bool)
    keep = ~tie.any(axis=1)
    return np.stack([rows[keep], cols[keep]], axis=1).astype(int), values[keep]


def corners_at(heads: np.ndarray, rows: np.ndarray, cols: np.ndarray, radius: int = VOTE_RADIUS) -> np.ndarray:
    """(k, 4, 2) corners: every pixel within `radius` of a peak votes (its position + its offsets), weighted by
    the heatmap there. One pixel's offsets are noisy; the vote steadies the corners, and with them the tilt."""
    dy, dx = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    inside = dy**2 + dx**2 <= radius**2 + 0.5
    dy, dx = dy[inside], dx[inside]
    h, w = heads.shape[:2]
    r = np.clip(rows[:, None] + dy[None, :], 0, h - 1)  # (k, m)
    c = np.clip(cols[:, None] + dx[None, :], 0, w - 1)
    offsets = heads[r, c][..., OFFSET_CHANNELS].reshape(len(rows), -1, 4, 2) * OFFSET_SCALE
    votes = np.stack([c + 0.5, r + 0.5], axis=-1)[:, :, None, :] + offsets  # (k, m, 4, 2)
    weight = np.square(heads[r, c, HEATMAP_CHANNEL]) + 1e-6
    return (votes * weight[:, :, None, None]).sum(axis=1) / weight.sum(axis=1)[:, None, None]


def _chain(points: np.ndarray, scores: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Indices of the best chain down the spine: each step goes down by about one vertebra, little sideways.

    Dynamic programming over the peaks sorted by row: each link is worth one vertebra plus the next peak's
    score, minus a penalty for a step that is not one vertebra down or that goes sideways; isolated false
    peaks (a rib, the iliac crest) cannot join because the steps to them do not fit.
    """
    n = len(points)
    best = 1.0 + scores.astype(np.float64)
    back = np.full(n, -1)
    dy = points[None, :, 0] - points[:, None, 0]  # [i, j]: row of j minus row of i
    dx = np.abs(points[None, :, 1] - points[:, None, 1])
    unit = np.maximum((sizes[:, None] + sizes[None, :]) / 2, 1.0)
    step = dy / unit  # in vertebra pitches (body + disc)
    levels = np.maximum(1.0, np.round(step))  # a step of two leaves a slot for a missed vertebra
    ok = (step > 0.5) & (step < 2.6) & (dx < 1.5 * unit * levels)  # a severe curve moves ~1 width per level
    penalty = 0.8 * np.abs(step - np.clip(levels, 1, 2)) + 0.3 * dx / (unit * levels) + 0.5 * (levels >= 2)
    gain = 1.0 + scores[None, :] - penalty
    for j in range(n):
        i_ok = np.nonzero(ok[:j, j])[0]
        if len(i_ok):
            cand = best[i_ok] + gain[i_ok, j]
            k = int(np.argmax(cand))
            if cand[k] > best[j]:
                best[j], back[j] = cand[k], i_ok[k]
    j = int(np.argmax(best))
    chain = [j]
    while back[chain[-1]] >= 0:
        chain.append(int(back[chain[-1]]))
    return np.array(chain[::-1])


def _pitches(points: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Each peak's expected step to the next vertebra (body + disc), in frame pixels.

    From its own corners (height x 1.3, the disc added), held within 0.6-1.6 of the film's typical step
    (the median distance from a peak to the nearest peak below it): corners read off a weak peak can be
    far off, the spacing of the peaks themselves cannot.
    """
    own = np.linalg.norm((corners[:, 2] + corners[:, 3]) / 2 - (corners[:, 0] + corners[:, 1]) / 2, axis=1) * 1.3
    dy = points[None, :, 0] - points[:, None, 0]
    dx = np.abs(points[None, :, 1] - points[:, None, 1])
    below = np.where((dy > 2) & (dx < np.maximum(own[:, None], 4.0)), dy, np.inf).min(axis=1)
    typical = float(np.median(below[np.isfinite(below)])) if np.isfinite(below).any() else float(np.median(own))
    return np.clip(own, 0.6 * typical, 1.6 * typical)


def _local_gaps(gaps: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Each gap's reference: the median of the (up to 3 + 3) gaps around it, or the expected step on a short chain."""
    local = np.empty_like(gaps)
    for i in range(len(gaps)):
        around = np.r_[gaps[max(0, i - 3) : i], gaps[i + 1 : i + 4]]
        local[i] = np.median(around) if len(around) >= 2 else (sizes[i] + sizes[i + 1]) / 2
    return np.maximum(local, 1.0)


def quad_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Area two (4, 2) TL, TR, BL, BR quadrilaterals share, as a share of the smaller one's area (their convex hulls:
    a weak peak's corners may cross)."""
    pa, pb = (cv2.convexHull(np.ascontiguousarray(q, dtype=np.float32)) for q in (a, b))
    smaller = min(cv2.contourArea(pa), cv2.contourArea(pb))
    if smaller <= 0:
        return 0.0
    shared, _ = cv2.intersectConvexConvex(pa, pb)
    return float(shared) / smaller


def _duplicates(centres: np.ndarray, sizes: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """Bool per chain peak: a second peak on one vertebra, between two others about one step apart, or a little more
    where its body overlaps a neighbour's.

    The heatmap sometimes peaks twice on a tilted or rotated body, or once more on the disc between two: the chain
    takes both, and each would count as a level. Judged against the gaps around the pair, not the pair's own.
    `corners` (k, 4, 2): each chain peak's body."""
    drop = np.zeros(len(centres), dtype=bool)
    for _ in range(len(centres)):
        keep = np.nonzero(~drop)[0]
        if len(keep) < 4:
            break
        gaps = np.linalg.norm(np.diff(centres[keep], axis=0), axis=1)
        local = _local_gaps(gaps, sizes[keep])
        span = (gaps[:-1] + gaps[1:]) / ((local[:-1] + local[1:]) / 2)  # peak k+1's two gaps, in local steps
        order = np.argsort(span, kind="stable")
        if span[order[0]] < DUPLICATE_SPAN:
            drop[keep[order[0] + 1]] = True
            continue
        body = corners[keep]
        overlapping = next(
            (
                k
                for k in order
                if span[k] < OVERLAP_SPAN
                and max(quad_overlap(body[k + 1], body[k]), quad_overlap(body[k + 1], body[k + 2])) > DUPLICATE_OVERLAP
            ),
            None,
        )
        if overlapping is None:
            break
        drop[keep[overlapping + 1]] = True
    return drop


def chain_slots(centres: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Level offsets of the chain's peaks counted in vertebrae: a gap about twice its neighbours' leaves a slot
    for a missed vertebra. Each gap is compared with the median of the gaps around it (the spine's own
    spacing, which grows slowly downwards), or with the expected step where the chain is short."""
    gaps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    if len(gaps) == 0:
        return np.zeros(1, dtype=int)
    local = _local_gaps(gaps, sizes)
    return np.concatenate([[0], np.cumsum(np.maximum(1, np.round(gaps / local)).astype(int))])


def _starts(slots: np.ndarray) -> range:
    """The level (0 = T1) the chain's first slot may take: every placement that keeps T1..L5 on the chain or the
    chain inside T1..L5."""
    span = int(slots[-1]) + 1
    return range(min(0, N_VERTEBRAE - span), max(0, N_VERTEBRAE - span) + 1)


def _ends_log_probs(slots: np.ndarray, corners: np.ndarray, read_ends: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """The ends model's log-probabilities for the chain's vertebrae, asked only of those whose class differs
    between the candidate placements (near the chain's ends): the others add the same to every placement, so
    they are left at 0 and the model reads about half the crops."""
    classes = ends_class(slots[None, :] + np.array(list(_starts(slots)))[:, None])
    ask = (classes != classes[:1]).any(axis=0)
    out = np.zeros((len(slots), len(ENDS_CLASSES)))
    if ask.any():
        out[ask] = read_ends(corners[ask])
    return out


def _place_levels(
    slots: np.ndarray,
    scores: np.ndarray,
    widths: np.ndarray,
    ends: np.ndarray | None = None,
    read_levels: np.ndarray | None = None,
    ends_weight: float = ENDS_WEIGHT,
    ends_log_probs: np.ndarray | None = None,
) -> int:
    """The level (0 = T1) of the chain's first slot: best fit of scores, the ends head, the level head and the
    width profile.

    `ends` (per chain peak, the ends head there): a peak the model takes for C7 or S1 counts against a
    placement that keeps it inside T1..L5 and for one that leaves it out. `read_levels` (per chain peak, the
    level head's reading in vertebrae, T1 = 0): a placement pays for each vertebra it disagrees by.
    `ends_log_probs` (per chain peak, the ends model's log-probabilities): a placement gains their likelihood."""
    best_start, best_fit = 0, -np.inf
    for start in _starts(slots):
        levels = slots + start
        inside = (levels >= 0) & (levels < N_VERTEBRAE)
        if not inside.any():
            continue
        ratio = widths[inside] / WIDTH_PROFILE[levels[inside]]
        shape_error = float(np.std(np.log(ratio))) if inside.sum() > 2 else 0.0
        # The model's own belief first (it is trained to stay low on C7 and S1), the sizes' shape second.
        fit = float(scores[inside].sum() / max(float(scores.max()), 1e-6)) - SHAPE_WEIGHT * shape_error * inside.sum()
        if ends is not None:
            fit += ends_weight * float(ends[~inside].sum() - ends[inside].sum()) / max(float(scores.max()), 1e-6)
        if read_levels is not None:
            fit -= LEVEL_WEIGHT * float(np.minimum(np.abs(read_levels - levels), LEVEL_CAP).sum())
        if ends_log_probs is not None:
            fit += ENDS_MODEL_WEIGHT * placement_log_likelihood(ends_log_probs, levels)
        if fit > best_fit:
            best_start, best_fit = start, fit
    return best_start


@dataclass(frozen=True)
class Chain:
    """The vertebrae seen down the spine, top to bottom, before any level is placed (frame pixels)."""

    points: np.ndarray  # (k, 2) row, col of each peak
    scores: np.ndarray  # (k,) the centre heatmap there
    corners: np.ndarray  # (k, 4, 2) x, y of TL, TR, BL, BR
    sizes: np.ndarray  # (k,) expected step to the next vertebra
    widths: np.ndarray  # (k,)
    notes: list[str] = field(default_factory=list)


def find_chain(heads: np.ndarray, min_peak: float = MIN_PEAK) -> Chain | None:
    """The heatmap's peaks linked into one chain down the spine, second peaks on one vertebra dropped; None when
    fewer than 3 are seen. It may run past T1 and L5 (cervical, sacral): `decode` places the levels on it."""
    heatmap = np.ascontiguousarray(heads[..., HEATMAP_CHANNEL], dtype=np.float32)  # a strided view filters slowly
    points, scores = find_peaks(heatmap, min_peak)
    if len(points) < 3:
        return None
    corners = corners_at(heads, points[:, 0], points[:, 1])
    sizes = _pitches(points, corners)
    widths = np.linalg.norm((corners[:, 1] + corners[:, 3]) / 2 - (corners[:, 0] + corners[:, 2]) / 2, axis=1)
    chain = _chain(points, scores, sizes)
    if len(chain) < 3:
        return None
    notes: list[str] = []
    if len(chain) < len(points):
        notes.append(f"{len(points) - len(chain)} heatmap peak(s) off the spine's chain ignored")
    kept = chain[~_duplicates(corners[chain].mean(axis=1), sizes[chain], corners[chain])]
    if len(kept) < len(chain):
        notes.append(f"{len(chain) - len(kept)} second heatmap peak(s) on one vertebra ignored")
    return Chain(points[kept], scores[kept], corners[kept], sizes[kept], widths[kept], notes)


def decode(
    heads: np.ndarray,
    min_peak: float = MIN_PEAK,
    typical_peak: float = 1.0,
    ends_weight: float = ENDS_WEIGHT,
    read_ends: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Landmarks | None:
    """(H, W, N_CHANNELS) model output -> 17 vertebrae, or None when fewer than 3 vertebrae are seen.

    A seen vertebra's confidence is its peak over `typical_peak` (the model's median peak on the validation
    films, from the manifest), capped at 1: 1 is a vertebra seen as clearly as usual. `ends_weight`: the ends
    head's weight in the level placement (`WINDOW_ENDS_WEIGHT` on a full-body film's window). `read_ends`: the
    ends model on the chain's vertebrae ((k, 4, 2) frame corners -> (k, classes) log-probabilities), if one is served.
    """
    chain = find_chain(heads, min_peak)
    if chain is None:
        return None
    points, scores, corners, sizes, widths, notes = (
        chain.points,
        chain.scores,
        chain.corners,
        chain.sizes,
        chain.widths,
        list(chain.notes),
    )
    slots = chain_slots(corners.mean(axis=1), sizes)
    ends = heads[points[:, 0], points[:, 1], ENDS_CHANNEL] if heads.shape[-1] > ENDS_CHANNEL else None
    read_levels = None
    if heads.shape[-1] > LEVEL_CHANNEL:
        read_levels = heads[points[:, 0], points[:, 1], LEVEL_CHANNEL].astype(np.float64) * LEVEL_SCALE - 1.0
    ends_log_probs = _ends_log_probs(slots, corners, read_ends) if read_ends is not None else None
    levels = slots + _place_levels(slots, scores, widths, ends, read_levels, ends_weight, ends_log_probs)
    inside = (levels >= 0) & (levels < N_VERTEBRAE)
    if (~inside).any():
        notes.append(f"{int((~inside).sum())} vertebra(e) beyond T1..L5 on the chain left out (cervical, sacral)")
    out = np.full((N_VERTEBRAE, 4, 2), np.nan)
    conf = np.full(N_VERTEBRAE, INTERPOLATED_CONFIDENCE)
    out[levels[inside]] = corners[inside]
    conf[levels[inside]] = np.clip(scores[inside] / max(typical_peak, 1e-6), 0.0, 1.0)
    detected = ~np.isnan(out[:, 0, 0])
    if not detected.all():
        missing = [LEVELS[i] for i in np.nonzero(~detected)[0]]
        notes.append(f"no peak for {', '.join(missing)}: placed between the detected vertebrae")
        out = _fill_missing(out, detected)
    return Landmarks(corners=out, confidence=conf, detected=detected, notes=notes)


def _fill_missing(corners: np.ndarray, detected: np.ndarray) -> np.ndarray:
    """Levels without a peak: corner positions interpolated (or extrapolated linearly) along the level index."""
    known = np.nonzero(detected)[0]
    flat = corners.reshape(N_VERTEBRAE, 8)
    out = flat.copy()
    idx = np.arange(N_VERTEBRAE)
    for c in range(8):
        values = flat[known, c]
        filled = np.interp(idx, known, values)
        # beyond the ends: continue with the slope of the last two known levels, not a flat copy
        if known[0] > 0 and len(known) > 1:
            slope = (values[1] - values[0]) / (known[1] - known[0])
            filled[: known[0]] = values[0] + slope * (idx[: known[0]] - known[0])
        if known[-1] < N_VERTEBRAE - 1 and len(known) > 1:
            slope = (values[-1] - values[-2]) / (known[-1] - known[-2])
            filled[known[-1] + 1 :] = values[-1] + slope * (idx[known[-1] + 1 :] - known[-1])
        out[:, c] = filled
    return out.reshape(N_VERTEBRAE, 4, 2)
