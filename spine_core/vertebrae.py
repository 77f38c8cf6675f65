"""From an AP `Ap_Vertebra` mask to the 17 vertebrae T1..L5: levels, four corners and a confidence each.

Steps (all on the mask at the original image size; docs/measurement.md has the measurements):

1. Connected components (8-connected). Specks under a fraction of a typical vertebra's area go.
2. The chain: a smooth curve x(y) through the components' centroids (area-weighted polynomial, refit
   after dropping outliers); components far from it (ribs, a hand) or much thicker across their long
   axis than a vertebra is wide (pelvis, skull) are not vertebrae.
3. Merged vertebrae: a component whose extent along the chain is about k times its neighbours' is cut
   into k, each cut joining the deepest notches of its left and right sides (the disc). A cut edge is a
   guess, so the pieces then take their tilt from the run's real outer endplates, interpolated.
4. Corners: in each vertebra's frame (its up axis from its neighbours' centroids), straight lines are
   fitted to the top and bottom edges (the endplates) and to the two sides, over the middle of each
   edge; the corners are their intersections.
5. Levels: with exactly 17, T1..L5 top to bottom. With more, the surplus is dropped one at a time at the
   end that looks less like a vertebra (confidence x area relative to its neighbour). With fewer, the
   result is incomplete: `corners()` is None (no Cobb angle), levels are counted from L5 upwards and
   marked uncertain (neither end proved reliable on the validation films), and `reason` says how many
   were found and where the chain has a gap.

Confidence of a vertebra: the Dice overlap between its mask pixels and the quadrilateral of its fitted
corners, times 2/3 for a vertebra cut out of a merged component. 1 means the mask is a clean
quadrilateral the corners describe exactly; ragged, partial or merged blobs score lower.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from scipy import ndimage

from spine_core.cobb import LEVELS, N_VERTEBRAE
from spine_core.landmark_metrics import dice, fill_vertebrae

MIN_AREA_FRACTION = 0.15  # of the median area of the largest components: smaller blobs are specks
MAX_WIDTH_RATIO = 2.2  # a component this much thicker than the median vertebra's width is not one (pelvis, skull)
OFF_CHAIN_WIDTHS = 1.0  # centroid farther than this many median widths from the chain curve: not on it
SPLIT_PENALTY = 2 / 3  # confidence factor of a vertebra cut out of a merged component
EDGE_TRIM = 0.2  # fraction of each edge's length ignored at both ends when fitting its line
MIN_EDGE_SAMPLES = 6  # pixel rows/columns an edge needs for a fitted slope
MAX_ENDPLATE_SLOPE = 0.6  # ~31 degrees against the frame's across axis (the frame follows the chain already)
MAX_SIDE_SLOPE = 0.6


@dataclass(frozen=True)
class Vertebra:
    level: str
    corners: np.ndarray  # (4, 2) x, y in original pixels: TL, TR, BL, BR
    confidence: float
    area_px: int
    split: bool = False  # cut out of a component that held several vertebrae
    detected: bool = True  # False: placed between (or beyond) found neighbours, not seen itself (landmark model)

    def to_dict(self) -> dict:
        return {
            "level": self.level,
            "corners": np.round(self.corners, 1).tolist(),
            "confidence": round(self.confidence, 3),
            "detected": self.detected,
        }


@dataclass(frozen=True)
class VertebraeResult:
    vertebrae: list[Vertebra]  # top to bottom
    reason: str | None = None  # why the chain is not the full T1..L5 (None when it is)
    notes: list[str] = field(default_factory=list)  # what the post-processing did (drops, splits)

    @property
    def complete(self) -> bool:
        return self.reason is None and len(self.vertebrae) == N_VERTEBRAE

    def corners(self) -> np.ndarray | None:
        """(17, 4, 2) corners T1..L5 for the Cobb computation, or None when the chain is incomplete."""
        return np.stack([v.corners for v in self.vertebrae]) if self.complete else None

    def confidences(self) -> list[float]:
        return [v.confidence for v in self.vertebrae]


@dataclass
class _Blob:
    xy: np.ndarray  # (n, 2) pixel centres x, y
    split: bool = False
    run: tuple[int, int, int] | None = None  # (merged component's id, this piece's place, pieces) when split

    @cached_property
    def centroid(self) -> np.ndarray:
        return self.xy.mean(axis=0)

    @property
    def width(self) -> float:
        return float(np.ptp(self.xy[:, 0]) + 1)

    @property
    def thickness(self) -> float:
        """Extent across the blob's long axis: a vertebra's, or a merged run of vertebrae's, width or
        height, even when the run lies diagonally; large for a pelvis or a skull."""
        centred = self.xy - self.xy.mean(axis=0)
        _, vectors = np.linalg.eigh(centred.T @ centred)
        return float(np.ptp(centred @ vectors[:, 0]) + 1)  # eigh sorts ascending: column 0 is the short axis


def _components(mask: np.ndarray) -> list[_Blob]:
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    blobs = []
    for index, window in enumerate(ndimage.find_objects(labels), start=1):
        if window is None:
            continue
        ys, xs = np.nonzero(labels[window] == index)
        blobs.append(_Blob(np.stack([xs + window[1].start, ys + window[0].start], axis=1).astype(np.float64)))
    return blobs


def _chain_curve(blobs: list[_Blob]) -> np.poly1d:
    centroids = np.array([b.centroid for b in blobs])
    weights = np.sqrt([len(b.xy) for b in blobs])
    degree = min(3, len(blobs) - 1)
    return np.poly1d(np.polyfit(centroids[:, 1], centroids[:, 0], degree, w=weights))


def _select_chain(blobs: list[_Blob], notes: list[str]) -> list[_Blob]:
    if not blobs:
        return []
    areas = np.array([len(b.xy) for b in blobs], dtype=np.float64)
    typical_area = np.median(np.sort(areas)[::-1][:N_VERTEBRAE])
    kept = [b for b, a in zip(blobs, areas, strict=True) if a >= MIN_AREA_FRACTION * typical_area]
    if len(kept) < len(blobs):
        notes.append(f"dropped {len(blobs) - len(kept)} speck(s)")
    if len(kept) < 4:
        return kept
    typical_width = float(np.median([b.width for b in kept]))
    wide = [b for b in kept if b.thickness > MAX_WIDTH_RATIO * typical_width]
    if wide:
        notes.append(f"dropped {len(wide)} component(s) too wide for a vertebra")
        kept = [b for b in kept if b.thickness <= MAX_WIDTH_RATIO * typical_width]
    for _ in range(3):  # refit without the worst outlier until all lie near the chain
        if len(kept) < 4:
            break
        curve = _chain_curve(kept)
        offsets = np.array([abs(b.centroid[0] - curve(b.centroid[1])) for b in kept])
        worst = int(offsets.argmax())
        if offsets[worst] <= OFF_CHAIN_WIDTHS * typical_width:
            break
        notes.append("dropped a component off the spine's chain")
        kept.pop(worst)
    return sorted(kept, key=lambda b: b.centroid[1])


def _axis(curve: np.poly1d, y: float) -> np.ndarray:
    """Unit vector down the chain at height y."""
    d = np.array([curve.deriv()(y), 1.0])
    return d / np.linalg.norm(d)


def _disc_line(u: np.ndarray, s: np.ndarray, expected: float, pitch: float) -> tuple[float, float, float]:
    """The disc space between two merged vertebrae near `expected` along the chain, as a line
    s = start + slope * (u - u0): through the deepest notch of the blob's left side and of its right
    side (discs are narrower than the bodies they join, and tilt with them). Falls back to the
    narrowest place straight across when the notches would give a steep line."""
    bins = s.astype(int)
    left = np.full(bins.max() + 1, np.nan)
    right = np.full(bins.max() + 1, np.nan)
    np.fmin.at(left, bins, u)
    np.fmax.at(right, bins, u)
    lo, hi = max(0, int(expected - 0.3 * pitch)), min(len(left), int(expected + 0.3 * pitch) + 1)
    if hi - lo < 3 or np.isnan(left[lo:hi]).all():
        return expected, 0.0, 0.0
    s_left = lo + int(np.nanargmax(left[lo:hi]))  # left side's most inward point
    s_right = lo + int(np.nanargmin(right[lo:hi]))
    u_left, u_right = left[s_left], right[s_right]
    slope = (s_right - s_left) / (u_right - u_left) if u_right > u_left else np.inf
    if abs(slope) <= MAX_ENDPLATE_SLOPE:
        return float(s_left), float(slope), float(u_left)
    width = right[lo:hi] - left[lo:hi]
    return float(lo + int(np.nanargmin(width))), 0.0, 0.0


def _split_merged(blobs: list[_Blob], notes: list[str]) -> list[_Blob]:
    if len(blobs) < 4:
        return blobs
    curve = _chain_curve(blobs)
    along = [blob.xy @ _axis(curve, blob.centroid[1]) for blob in blobs]
    extents = np.array([np.ptp(s) + 1 for s in along])
    result: list[_Blob] = []
    for i, (blob, s) in enumerate(zip(blobs, along, strict=True)):
        # Counted in the neighbours' vertebra heights; the discs inside a merged run make a run of three
        # or more look taller (see docs/measurement.md for the disc-aware count tried instead).
        reference = float(np.median(np.r_[extents[max(0, i - 3) : i], extents[i + 1 : i + 4]]))
        pieces = round(extents[i] / reference)
        if pieces < 2:
            result.append(blob)
            continue
        down = _axis(curve, blob.centroid[1])
        u = blob.xy @ np.array([down[1], -down[0]])  # across the chain
        offset = s - s.min()
        cut_lines = [_disc_line(u, offset, j * extents[i] / pieces, extents[i] / pieces) for j in range(1, pieces)]
        # A pixel's piece: how many disc lines it lies below.
        piece = sum((offset > start + slope * (u - u0)).astype(int) for start, slope, u0 in cut_lines)
        for k in range(pieces):
            part = blob.xy[piece == k]
            if len(part):
                result.append(_Blob(part, split=True, run=(i, k, int(pieces))))
        notes.append(f"cut a merged component into {pieces}")
    return sorted(result, key=lambda b: b.centroid[1])


def _edge(points: np.ndarray, across: int, extreme: str, max_slope: float) -> tuple[float, float]:
    """Line through the outermost pixel edge (min or max of the other coordinate) per column/row `across`.

    Fitted over the middle of the edge; with too few samples, or a slope past `max_slope` (a ragged or
    cut-off blob), the line is the median edge position instead, parallel to the frame's axis.
    """
    u = np.round(points[:, across]).astype(int)
    v = points[:, 1 - across]
    keys, inverse = np.unique(u, return_inverse=True)
    values = np.full(len(keys), np.inf if extreme == "min" else -np.inf)
    (np.minimum if extreme == "min" else np.maximum).at(values, inverse, v)
    values = values - 0.5 if extreme == "min" else values + 0.5  # pixel edge, not its centre
    trim = int(len(keys) * EDGE_TRIM)
    keys, values = keys[trim : len(keys) - trim], values[trim : len(values) - trim]
    if len(keys) < MIN_EDGE_SAMPLES:
        return 0.0, float(np.median(values)) if len(values) else 0.0
    a, b = np.polyfit(keys.astype(np.float64), values, 1)
    if abs(a) > max_slope:
        return 0.0, float(np.median(values))
    return float(a), float(b)


def _intersect(h: tuple[float, float], w: tuple[float, float]) -> np.ndarray:
    """Point on both v = a*u + b (an endplate, v down the axis) and u = c*v + d (a side)."""
    a, b = h
    c, d = w
    v = (a * d + b) / (1 - a * c)
    return np.array([c * v + d, v])


def _corners(blob: _Blob, down: np.ndarray) -> np.ndarray:
    """TL, TR, BL, BR of one vertebra, fitted in the frame whose v axis runs down the chain."""
    right = np.array([down[1], -down[0]])  # image x grows to the right
    origin = blob.centroid
    local = np.stack([(blob.xy - origin) @ right, (blob.xy - origin) @ down], axis=1)  # u across, v down
    top, bottom = _edge(local, 0, "min", MAX_ENDPLATE_SLOPE), _edge(local, 0, "max", MAX_ENDPLATE_SLOPE)
    left, right_side = _edge(local, 1, "min", MAX_SIDE_SLOPE), _edge(local, 1, "max", MAX_SIDE_SLOPE)
    uv = [_intersect(top, left), _intersect(top, right_side), _intersect(bottom, left), _intersect(bottom, right_side)]
    return np.array([origin + p[0] * right + p[1] * down for p in uv])


def _confidence(blob: _Blob, corners: np.ndarray) -> float:
    x0, y0 = np.floor(np.minimum(blob.xy.min(axis=0), corners.min(axis=0))).astype(int) - 1
    x1, y1 = np.ceil(np.maximum(blob.xy.max(axis=0), corners.max(axis=0))).astype(int) + 2
    own = np.zeros((y1 - y0, x1 - x0), dtype=bool)
    own[blob.xy[:, 1].astype(int) - y0, blob.xy[:, 0].astype(int) - x0] = True
    quad = fill_vertebrae(corners[None] - [x0, y0], y1 - y0, x1 - x0)
    return dice(own, quad) * (SPLIT_PENALTY if blob.split else 1.0)


def _likeness(end: tuple[_Blob, np.ndarray, float], neighbour: tuple[_Blob, np.ndarray, float]) -> float:
    """How much an end component looks like a vertebra: its confidence, times its area relative to its
    neighbour's when smaller (a fragment of the sacrum or of a half-seen vertebra is much smaller)."""
    return end[2] * min(1.0, len(end[0].xy) / len(neighbour[0].xy))


def _tilt(corners: np.ndarray) -> float:
    """Angle (radians) of the left-side-midpoint to right-side-midpoint vector, the one the Cobb angle uses."""
    d = (corners[1] + corners[3]) / 2 - (corners[0] + corners[2]) / 2
    return float(np.arctan2(d[1], d[0]))


def _edge_tilt(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.arctan2(b[1] - a[1], b[0] - a[0]))


def _rotated(corners: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    centre = corners.mean(axis=0)
    return (corners - centre) @ np.array([[c, s], [-s, c]]) + centre


def _retilt_split_pieces(fitted: list[tuple[_Blob, np.ndarray, float]]) -> list[tuple[_Blob, np.ndarray, float]]:
    """A piece cut out of a merged run has at most one real endplate: the cut is a guess. Its tilt is
    taken instead from the run's real outer endplates (the top of its first piece, the bottom of its
    last), interpolated linearly along the run (tilts change smoothly along the spine)."""
    runs: dict[int, dict[int, int]] = {}
    for index, (blob, _, _) in enumerate(fitted):
        if blob.run is not None:
            runs.setdefault(blob.run[0], {})[blob.run[1]] = index
    result = list(fitted)
    for places in runs.values():
        count = fitted[next(iter(places.values()))][0].run[2]
        if set(places) != set(range(count)):
            continue  # a piece went missing (too small): leave the run as fitted
        top = fitted[places[0]][1]
        bottom = fitted[places[count - 1]][1]
        top_tilt, bottom_tilt = _edge_tilt(top[0], top[1]), _edge_tilt(bottom[2], bottom[3])
        for place, index in places.items():
            blob, corners, confidence = fitted[index]
            target = top_tilt + (bottom_tilt - top_tilt) * (place + 0.5) / count
            result[index] = (blob, _rotated(corners, target - _tilt(corners)), confidence)
    return result


def _widest_gap(blobs: list[_Blob]) -> int | None:
    """1-based index of the found vertebra after which the chain has a gap of about one vertebra (the
    step between centroids over 1.6 times the median step), or None."""
    if len(blobs) < 4:
        return None
    steps = np.linalg.norm(np.diff([b.centroid for b in blobs], axis=0), axis=1)
    widest = int(steps.argmax())
    return widest + 1 if steps[widest] > 1.6 * np.median(steps) else None


def find_vertebrae(mask: np.ndarray) -> VertebraeResult:
    """The vertebrae T1..L5 of one AP film's `Ap_Vertebra` mask (bool, original size)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"expected a 2-D mask, got shape {mask.shape}")
    notes: list[str] = []
    blobs = _split_merged(_select_chain(_components(mask.astype(bool)), notes), notes)
    if len(blobs) < 2:
        return VertebraeResult([], reason=f"found {len(blobs)} vertebra-like component(s); no spine can be read", notes=notes)
    centroids = np.array([b.centroid for b in blobs])
    fitted = []
    for i, blob in enumerate(blobs):
        # Up axis from the neighbours' centroids: local, and free of a polynomial's swings at the ends.
        down = centroids[min(i + 1, len(blobs) - 1)] - centroids[max(i - 1, 0)]
        corners = _corners(blob, down / np.linalg.norm(down))
        fitted.append((blob, corners, _confidence(blob, corners)))
    fitted = _retilt_split_pieces(fitted)
    while len(fitted) > N_VERTEBRAE:  # surplus: drop the end that looks least like a vertebra
        top, bottom = (_likeness(fitted[0], fitted[1]), _likeness(fitted[-1], fitted[-2]))
        end = 0 if top < bottom else -1
        fitted.pop(end)
        notes.append(f"dropped a surplus component at the {'top' if end == 0 else 'bottom'}")
    levels = LEVELS[N_VERTEBRAE - len(fitted) :]  # count from L5 upwards
    vertebrae = [
        Vertebra(level, corners, float(conf), len(blob.xy), blob.split)
        for level, (blob, corners, conf) in zip(levels, fitted, strict=True)
    ]
    reason = None
    if len(vertebrae) < N_VERTEBRAE:
        reason = f"found {len(vertebrae)} of the {N_VERTEBRAE} vertebrae T1-L5; levels counted from L5 upwards (uncertain)"
        gap = _widest_gap([blob for blob, _, _ in fitted])
        if gap is not None:
            reason += f"; one seems missing or merged between found vertebrae {gap} and {gap + 1} (from the top)"
    return VertebraeResult(vertebrae, reason=reason, notes=notes)
