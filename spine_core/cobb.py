"""Cobb angles from the 17 vertebrae's corners (T1..L5), computed as the AASCE-2019 organisers do.

The organisers' rule (described with the challenge data; written here from that description):

- Each vertebra gives one vector, from the midpoint of its left side (TL, BL) to the midpoint of its
  right side (TR, BR). The angle between every pair of vectors is taken (arccos of the cosine, not
  clipped at 90°: a label file with a reversed vertebra reproduces only this way).
- The largest pairwise angle is the first Cobb angle; its two vertebrae are the curve's end vertebrae.
- Whether the spine is S-shaped is read off the centreline (the 34 midpoints of the vertebrae's top
  and bottom endplates): it is an S when those points lie on both sides of the chord joining the first
  and the last one.
- Not S: the second angle is between T1 and the main curve's upper end, the third between the main
  curve's lower end and L5.
- S, main curve in the upper half of the image (the lower endplates' midpoints of its two end vertebrae
  average above mid-film): the second angle is the largest between the upper end and any vertebra above
  it, the third the largest between the lower end and any vertebra below it.
- S, main curve in the lower half: the second is the largest between the upper end and a vertebra
  above it, the third the largest between that vertebra and one above it.

`angles.csv` of the AASCE data holds the three in that computed order (largest first); the training
labels' own corners reproduce it (see `tests/spine_core/test_cobb.py`). `angles_deg` gives them by
region instead, [proximal-thoracic, main-thoracic, thoracolumbar/lumbar], with the organisers' naming:
the largest curve is main-thoracic unless the spine is an S whose main curve lies in the lower half.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

LEVELS: tuple[str, ...] = tuple([f"T{i}" for i in range(1, 13)] + [f"L{i}" for i in range(1, 6)])
N_VERTEBRAE = len(LEVELS)  # 17: T1..L5
CORNERS = ("TL", "TR", "BL", "BR")
# Severity lines in degrees (the usual scoliosis bands): below 10 none, 10-25 mild, 25-40 moderate, 40+ severe.
SEVERITY_LINES: tuple[tuple[float, str], ...] = ((40.0, "severe"), (25.0, "moderate"), (10.0, "mild"))
# An end vertebra less confident than this makes its curve's angle uncertain. Every vertebra cut out of
# a merged component is below it (SPLIT_PENALTY in spine_core.vertebrae), as is a poor quadrilateral fit.
MIN_END_CONFIDENCE = 0.8
# The organisers' S test compares sum(l)^2 with sum(|l|)^2 within this tolerance (l normalised by the chord).
_S_TOLERANCE = 1e-4


@dataclass(frozen=True)
class Curve:
    name: str  # "proximal_thoracic" | "main_thoracic" | "thoracolumbar_lumbar"
    upper_end: str  # level name of the upper end vertebra
    lower_end: str
    apex: str  # vertebra between the ends farthest from the line joining the ends' centres
    angle_deg: float
    end_confidence: float | None = None  # the lower of its end vertebrae's confidences, when given
    # False when that confidence is below MIN_END_CONFIDENCE: this curve's angle may be off (None: not given)
    reliable: bool | None = None


@dataclass(frozen=True)
class CobbResult:
    angles_deg: list[float]  # [proximal-thoracic, main-thoracic, thoracolumbar/lumbar]
    max_deg: float
    curve: str  # "C" | "S"
    curves: list[Curve]  # the curves whose end vertebrae differ, largest first
    severity: str  # none | mild | moderate | severe
    aasce_angles_deg: list[float] = field(default_factory=list)  # the organisers' order, as in angles.csv
    # The main (largest) curve's own `reliable`: False when one of its end vertebrae is uncertain
    reliable: bool | None = None
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-ready form (the `cobb` object of the planned /classify response, plus `aasce_angles_deg`)."""
        return asdict(self)


def severity(max_deg: float) -> str:
    for line, name in SEVERITY_LINES:
        if max_deg >= line:
            return name
    return "none"


def as_corners(points: np.ndarray) -> np.ndarray:
    """(68, 2) or (17, 4, 2) corner points in pixels (TL, TR, BL, BR per vertebra) -> (17, 4, 2) float64."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.shape == (4 * N_VERTEBRAE, 2):
        pts = pts.reshape(N_VERTEBRAE, 4, 2)
    if pts.shape != (N_VERTEBRAE, 4, 2):
        raise ValueError(f"expected {N_VERTEBRAE} vertebrae x 4 corners x (x, y), got shape {pts.shape}")
    if not np.all(np.isfinite(pts)):
        raise ValueError("corner coordinates must be finite")
    return pts


def side_vectors(corners: np.ndarray) -> np.ndarray:
    """(k, 2) each vertebra's vector from the midpoint of its left side (TL, BL) to that of its right (TR, BR)."""
    return (corners[:, 1] + corners[:, 3]) / 2 - (corners[:, 0] + corners[:, 2]) / 2


def pairwise_angles_deg(corners: np.ndarray) -> np.ndarray:
    """(17, 17) angles between the vertebrae's left-to-right vectors, in degrees."""
    vectors = side_vectors(corners)
    norms = np.linalg.norm(vectors, axis=1)
    if np.any(norms == 0):
        raise ValueError("a vertebra has coinciding left and right sides")
    cosine = np.clip(vectors @ vectors.T / np.outer(norms, norms), -1.0, 1.0)
    return np.degrees(np.arccos(cosine))


def centreline(corners: np.ndarray) -> np.ndarray:
    """(34, 2) midpoints of each vertebra's top (TL-TR) then bottom (BL-BR) endplate, top to bottom."""
    return (corners.reshape(-1, 2, 2)[:, 0] + corners.reshape(-1, 2, 2)[:, 1]) / 2


def is_s_curve(mid: np.ndarray) -> bool:
    """Do the centreline points (all but the last two) lie on both sides of the first-to-last chord?"""
    first, last = mid[0], mid[-1]
    dy, dx = first[1] - last[1], first[0] - last[0]
    if dy == 0:
        raise ValueError("the centreline's first and last points are at the same height")
    # The organisers' normalised offset (y_i - y_n)/dy - (x_i - x_n)/dx; for a vertical chord (dx == 0)
    # only its sign is defined, which is all the test needs there.
    offsets = (mid[:-2, 1] - last[1]) / dy
    offsets = offsets - (mid[:-2, 0] - last[0]) / dx if dx != 0 else -(mid[:-2, 0] - last[0]) * np.sign(dy)
    return abs(offsets.sum() ** 2 - np.abs(offsets).sum() ** 2) >= _S_TOLERANCE


def _apex(corners: np.ndarray, upper: int, lower: int) -> int:
    centres = corners.mean(axis=1)
    if lower - upper < 2:
        return upper
    a, b = centres[upper], centres[lower]
    direction = (b - a) / np.linalg.norm(b - a)
    inner = centres[upper + 1 : lower] - a
    distance = np.abs(inner[:, 0] * direction[1] - inner[:, 1] * direction[0])
    return upper + 1 + int(np.argmax(distance))


def cobb_angles(points: np.ndarray, image_height: float, confidences: Sequence[float] | None = None) -> CobbResult:
    """The three Cobb angles of one AP film from its 17 vertebrae's corners (original pixels).

    `image_height` (pixels) decides, for an S-shaped spine, whether the main curve is in the upper half.
    `confidences` (17, per vertebra, e.g. from `spine_core.vertebrae`) mark curves whose end vertebrae
    are uncertain: `reliable` and `warnings` say so.
    """
    corners = as_corners(points)
    if confidences is not None and len(confidences) != N_VERTEBRAE:
        raise ValueError(f"expected {N_VERTEBRAE} confidences, got {len(confidences)}")
    angles = pairwise_angles_deg(corners)
    mid = centreline(corners)
    last = N_VERTEBRAE - 1

    # Row maxima; the first row reaching the overall maximum is the upper end (the matrix is symmetric).
    partner = angles.argmax(axis=1)
    upper = int(angles.max(axis=1).argmax())
    lower = int(partner[upper])
    upper, lower = min(upper, lower), max(upper, lower)
    first_angle = float(angles[upper, lower])

    s_shaped = is_s_curve(mid)
    # The lower endplates: the organisers' MATLAB reads rows 2k of the 1-based midpoints (k = the end vertebra).
    main_in_upper_half = mid[2 * upper + 1, 1] + mid[2 * lower + 1, 1] < image_height
    if not s_shaped:
        second_ends, third_ends = (0, upper), (lower, last)
        names = ("main_thoracic", "proximal_thoracic", "thoracolumbar_lumbar")
    elif main_in_upper_half:
        above = int(angles[upper, : upper + 1].argmax())
        below = lower + int(angles[lower, lower:].argmax())
        second_ends, third_ends = (above, upper), (lower, below)
        names = ("main_thoracic", "proximal_thoracic", "thoracolumbar_lumbar")
    else:
        above = int(angles[upper, : upper + 1].argmax())
        above_that = int(angles[above, : above + 1].argmax())
        second_ends, third_ends = (above, upper), (above_that, above)
        names = ("thoracolumbar_lumbar", "main_thoracic", "proximal_thoracic")

    ends = [(upper, lower), second_ends, third_ends]
    computed = [first_angle, float(angles[second_ends]), float(angles[third_ends])]
    by_name = dict(zip(names, computed, strict=True))

    def end_confidence(a: int, b: int) -> float | None:
        return None if confidences is None else round(float(min(confidences[a], confidences[b])), 3)

    def reliable(confidence: float | None) -> bool | None:
        return None if confidence is None else confidence >= MIN_END_CONFIDENCE

    curves = [
        Curve(name, LEVELS[a], LEVELS[b], LEVELS[_apex(corners, a, b)], round(value, 3), conf, reliable(conf))
        for name, (a, b), value in zip(names, ends, computed, strict=True)
        if b > a
        for conf in [end_confidence(a, b)]
    ]
    curves.sort(key=lambda c: -c.angle_deg)
    warnings = [
        f"the {c.name.replace('_', ' ')} curve's end vertebrae ({c.upper_end}, {c.lower_end}) are uncertain "
        f"(confidence {c.end_confidence:.2f}): its angle may be off"
        for c in curves
        if c.reliable is False
    ]
    return CobbResult(
        angles_deg=[by_name["proximal_thoracic"], by_name["main_thoracic"], by_name["thoracolumbar_lumbar"]],
        max_deg=first_angle,
        curve="S" if s_shaped else "C",
        curves=curves,
        severity=severity(first_angle),
        aasce_angles_deg=computed,
        reliable=reliable(end_confidence(upper, lower)),  # the main curve's, as curves[0] says when it is listed
        warnings=warnings,
    )
