"""The 17 vertebrae of an AP film from the landmark model: one pass on cropped films, two on full-body films.

`read_vertebrae(run, pixels)` calls `run` (a batch of model-frame images -> the landmark model's heads; the
caller supplies it, so every session run goes through the caller's scheduler) on the whole film
letterboxed into the model's input. When the 17 vertebrae found span less than `FULL_BODY_SHARE` of the
frame's height (a skull-to-pelvis film, or a wide one, where the spine is small in the frame), the model runs a second
time on a window framed the way the training films are framed (T1 near the top, the sacrum's top near
the bottom) and the window's answer is kept when it finds its vertebrae. Corners go back to original
pixels; the answer is always 17 vertebrae, each with its confidence (low where a level was interpolated).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from spine_core.cobb import LEVELS
from spine_core.landmarks import WINDOW_ENDS_WEIGHT, Landmarks, decode
from spine_core.preprocessing import UNET_INPUT_HW, CropBox, Letterbox, preprocess_crop, preprocess_image
from spine_core.vertebrae import Vertebra, VertebraeResult

# T1-L5 spans 0.77-0.93 of an AASCE film's height (5th-95th percentile). Below 0.72 a second pass runs on a window:
# a first pass that takes S1 or C7 into the chain spans about one vertebra (1/17 of T1-L5, ~0.05) more than T1-L5.
FULL_BODY_SHARE = 0.72
# Window around the first pass's T1..L5, as shares of its span: the training films show ~4 % of it above
# T1 and ~8 % below L5; a little more leaves room for a first pass that is one level off.
WINDOW_ABOVE, WINDOW_BELOW = 0.10, 0.12
WINDOW_SIDE = 0.5  # share of the vertebrae's width added on each side before growing to the input's aspect

RunHeads = Callable[[np.ndarray], np.ndarray]  # (N, H, W, 1) float32 -> (N, H, W, N_CHANNELS)
ReadEnds = Callable[[np.ndarray], np.ndarray]  # (k, 4, 2) corners in the film's pixels -> (k, classes) log-probs


@dataclass(frozen=True)
class LandmarkReading:
    vertebrae: VertebraeResult
    window: CropBox | None = None  # the second pass's window on a full-body film
    passes: int = 1
    notes: list[str] = field(default_factory=list)
    # The model's answer on the pass kept and the frame it is in: tools that read the whole chain (`find_chain`,
    # cervical and sacral bodies included) take it from here rather than running the model again.
    heads: np.ndarray | None = None
    frame: Letterbox | CropBox | None = None


def frame_to_source(points: np.ndarray, frame: Letterbox | CropBox) -> np.ndarray:
    """(..., 2) x, y in a model frame (pixel edges at integers) -> original pixels."""
    pts = np.asarray(points, dtype=np.float64)
    if isinstance(frame, Letterbox):
        scale = np.array([frame.src_w / frame.content_w, frame.src_h / frame.content_h])
        return (pts - np.array([frame.left, frame.top])) * scale
    scale = np.array([frame.width / frame.out_w, frame.height / frame.out_h])
    return pts * scale + np.array([frame.left, frame.top])


def source_to_frame(points: np.ndarray, frame: Letterbox) -> np.ndarray:
    """(..., 2) x, y in original pixels -> the letterboxed model frame: `frame_to_source` the other way."""
    scale = np.array([frame.content_w / frame.src_w, frame.content_h / frame.src_h])
    return np.asarray(points, dtype=np.float64) * scale + np.array([frame.left, frame.top])


def _quad_area(corners: np.ndarray) -> float:
    """Shoelace area of TL -> TR -> BR -> BL."""
    x, y = corners[[0, 1, 3, 2], 0], corners[[0, 1, 3, 2], 1]
    return float(0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def frame_fill(box: Letterbox | CropBox) -> float:
    """The share of the model frame's height the film's content takes (1 unless the film is wider than the frame)."""
    return box.content_h / box.out_h if isinstance(box, Letterbox) else 1.0


def to_vertebrae(found: Landmarks, frame: Letterbox | CropBox) -> VertebraeResult:
    corners = frame_to_source(found.corners, frame)
    vertebrae = [
        Vertebra(level, corners[i], float(found.confidence[i]), round(_quad_area(corners[i])), detected=bool(found.detected[i]))
        for i, level in enumerate(LEVELS)
    ]
    return VertebraeResult(vertebrae, reason=None, notes=list(found.notes))


def full_body_window(corners: np.ndarray, src_hw: tuple[int, int], out_hw: tuple[int, int] = UNET_INPUT_HW) -> CropBox:
    """The window (original pixels) that frames T1..L5 as the training films do."""
    top, bottom = corners[0, :2, 1].mean(), corners[-1, 2:, 1].mean()
    span = max(bottom - top, 1.0)
    y0, y1 = top - WINDOW_ABOVE * span, bottom + WINDOW_BELOW * span
    x0, x1 = corners[..., 0].min(), corners[..., 0].max()
    side = (x1 - x0) * WINDOW_SIDE
    x0, x1 = x0 - side, x1 + side
    h, w = y1 - y0, x1 - x0
    aspect = out_hw[0] / out_hw[1]
    h, w = max(h, w * aspect), max(w, h / aspect)
    return CropBox(
        src_h=src_hw[0],
        src_w=src_hw[1],
        top=round((y0 + y1) / 2 - h / 2),
        left=round((x0 + x1) / 2 - w / 2),
        height=max(1, round(h)),
        width=max(1, round(w)),
        out_h=out_hw[0],
        out_w=out_hw[1],
    )


def read_vertebrae(
    run: RunHeads,
    pixels: np.ndarray,
    out_hw: tuple[int, int] = UNET_INPUT_HW,
    typical_peak: float = 1.0,
    frame: tuple[np.ndarray, Letterbox] | None = None,
    first_heads: np.ndarray | None = None,
    read_ends: ReadEnds | None = None,
) -> LandmarkReading:
    """The film's 17 vertebrae in original pixels (or a VertebraeResult with a reason when no spine is seen).

    `typical_peak`: the model's median heatmap peak on the validation films (its manifest's `val_median_peak`).
    `frame`: the film already letterboxed into `out_hw` (`preprocess_image`'s answer, e.g. the U-Net's input),
    so the film is not resized twice. `first_heads`: the model's answer on `frame`, when the caller ran it
    already (beside the U-Net); `run` then serves the second pass only. `read_ends`: the ends model on vertebrae
    of the film (`spine_core.vertebra_ends`), voting in each pass's level placement, if one is served.
    """

    def ends_in(box: Letterbox | CropBox) -> Callable[[np.ndarray], np.ndarray] | None:
        return None if read_ends is None else lambda corners: read_ends(frame_to_source(corners, box))

    frame_input, box = frame if frame is not None else preprocess_image(pixels, out_hw)
    heads = first_heads if first_heads is not None else run(frame_input[None, ..., None])[0]
    found = decode(heads, typical_peak=typical_peak, read_ends=ends_in(box))
    if found is None:
        return LandmarkReading(VertebraeResult([], reason="the landmark model found fewer than 3 vertebrae"))
    first = to_vertebrae(found, box)
    corners = np.stack([v.corners for v in first.vertebrae])
    # The share of the model's frame the spine fills: of the film's height on a film taller than the frame's aspect,
    # less on a wide one (a 14x17 inch cassette, a film with wide margins), where the letterbox shrinks it as much.
    share = (corners[-1, 2:, 1].mean() - corners[0, :2, 1].mean()) / pixels.shape[0] * frame_fill(box)
    if share >= FULL_BODY_SHARE:
        return LandmarkReading(first, heads=heads, frame=box)
    window = full_body_window(corners, pixels.shape[:2], out_hw)
    window_heads = run(preprocess_crop(pixels, window)[None, ..., None])[0]
    windowed = decode(window_heads, typical_peak=typical_peak, ends_weight=WINDOW_ENDS_WEIGHT, read_ends=ends_in(window))
    if windowed is None or windowed.detected.sum() < found.detected.sum() - 2:
        note = f"T1-L5 spans {share:.0%} of the model's frame; a second pass on a window around it found less, first pass kept"
        return LandmarkReading(first, window=None, passes=2, notes=[note], heads=heads, frame=box)
    note = f"T1-L5 spans {share:.0%} of the model's frame: measured on a second pass in a window around the spine"
    kept = to_vertebrae(windowed, window)
    return LandmarkReading(kept, window=window, passes=2, notes=[note], heads=window_heads, frame=window)


CORRIDOR_SIDE = 0.2  # share of a vertebra's width the corridor adds on each side (a pedicle or an osteophyte stays in)
CORRIDOR_REACH = 0.6  # up and down from each centre, in steps to its neighbour: the discs between bodies stay in
# Beyond T1 and L5, the band the classifier's mask is kept in goes on this many steps (its label figures were
# measured with it; a chain one level off does not cut a true T1 or L5 out of what it reads).
CORRIDOR_BEYOND = 1.6
# The served mask stops half-way through the disc beyond T1 and L5 (the body is ~0.7 of a step): C7 and S1 are
# not vertebrae of T1..L5. On the AASCE validation films this raised the mask's Dice (0.850 -> 0.852).
SERVED_BEYOND = CORRIDOR_REACH
# Across the spine the served mask keeps a tenth of a vertebra's width on each side (the classifier's band a fifth):
# on a rotated scoliotic spine the U-Net's mask spreads beside the bodies, and on the AASCE validation films a tenth
# costs nothing (Dice 0.8537 -> 0.8536; none at all: 0.8502). docs/fov.md has the full-body figures.
SERVED_SIDE = 0.1


def spine_corridor(
    corners: np.ndarray, height: int, width: int, beyond: float = CORRIDOR_BEYOND, side: float = CORRIDOR_SIDE
) -> np.ndarray:
    """Bool (height, width) mask of the band along the 17 vertebrae ((17, 4, 2) corners in those pixels).

    The vertebra mask is kept inside it: a blob on the skull, a rib or the pelvis is not a vertebra of T1..L5,
    whatever the segmentation says. `beyond`: how far past T1 and L5 it goes, in steps to their neighbours; `side`:
    how far beside each body, in shares of its width."""
    from PIL import Image, ImageDraw  # drawing polygons is what Pillow is for; kept local to this helper

    quads = np.asarray(corners, dtype=np.float64)
    centres = quads.mean(axis=1)
    across = (quads[:, 1] + quads[:, 3]) / 2 - (quads[:, 0] + quads[:, 2]) / 2  # left -> right, one width long
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    reach = CORRIDOR_REACH * np.r_[steps[:1], np.maximum(steps[:-1], steps[1:]), steps[-1:]]
    reach[[0, -1]] = beyond * steps[[0, -1]]
    unit = across / np.maximum(np.linalg.norm(across, axis=1, keepdims=True), 1e-6)
    down = np.stack([-unit[:, 1], unit[:, 0]], axis=1)  # across turned a quarter: down the spine
    half_across = across * (0.5 + side)
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for c, a, d in zip(centres, half_across, down * reach[:, None], strict=True):
        draw.polygon([tuple(c - a - d), tuple(c + a - d), tuple(c + a + d), tuple(c - a + d)], fill=1)
    return np.asarray(canvas, dtype=bool)
