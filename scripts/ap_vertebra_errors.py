"""Where Ap_Vertebra's wrong pixels lie, whether label-shaped masks would score better, and what the
second stage's windows allow.

.venv/bin/python scripts/ap_vertebra_errors.py ../shared/data/aasce-train [--models exported_models]

On the 90 patient-held-out validation images, in the first stage's 512x256 model frame:
  - the wrong pixels (false positive or negative) by distance to the ground truth's edge (1, 2, 3, 4,
    5 px, farther) and the share beyond the first/last labelled row;
  - Dice per vertebral level (T1..L5), each level's band of rows running from the middle of the disc
    above to the middle of the disc below (T1's band from the film's top, L5's to its bottom);
  - Dice when each predicted vertebra (connected component) is replaced by its convex hull, or by the
    quadrilateral of its four diagonal extremes (the labels are corner quadrilaterals);
and at the original size, for the windows the second stage sees (placed from the first stage's masks,
spine_core.preprocessing.CropBox): the ground truth sent through a window and back (the ceiling the
window's resolution allows) and the share of labelled pixels inside the window.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from spine_core.preprocessing import (
    REFINE_INPUT_HW,
    CropBox,
    crop_mask,
    crop_probabilities_to_source,
    letterbox_mask,
)
from spine_engine import ModelRegistry, Segmenter
from training.datasets import N_VERTEBRAE, read_aasce_dataset
from training.label_analysis import LEVELS, level_bands
from training.metrics import dice
from training.splits import aasce_sample_split


def _grow(mask: np.ndarray) -> np.ndarray:
    """Binary dilation by one pixel (4-neighbourhood)."""
    out = mask.copy()
    out[1:] |= mask[:-1]
    out[:-1] |= mask[1:]
    out[:, 1:] |= mask[:, :-1]
    out[:, :-1] |= mask[:, 1:]
    return out


def _components(mask: np.ndarray, min_pixels: int = 20) -> list[np.ndarray]:
    """Connected components (Pillow flood fill), small specks dropped."""
    img = Image.fromarray(mask.astype(np.uint8) * 255).copy()
    found = []
    for label in range(1, 255):
        remaining = np.flatnonzero(np.asarray(img) == 255)
        if remaining.size == 0:
            break
        y, x = divmod(int(remaining[0]), mask.shape[1])
        ImageDraw.floodfill(img, (x, y), label)
        component = np.asarray(img) == label
        if component.sum() >= min_pixels:
            found.append(component)
    return found


def _hull(points: np.ndarray) -> list[tuple[float, float]]:
    """Convex hull (monotone chain) of (x, y) points."""
    pts = sorted(set(map(tuple, points.tolist())))
    if len(pts) < 3:
        return pts

    def cross(o, a, b) -> float:
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower: list = []
    upper: list = []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return lower[:-1] + upper[:-1]


def _reshaped(mask: np.ndarray, shape: str) -> np.ndarray:
    out = Image.new("L", (mask.shape[1], mask.shape[0]), 0)
    draw = ImageDraw.Draw(out)
    for component in _components(mask):
        ys, xs = np.nonzero(component)
        # Pixel corners, so a polygon through them covers whole pixels.
        pts = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)]) - 0.5
        if shape == "hull":
            polygon = _hull(pts)
        else:
            s, d = pts[:, 0] + pts[:, 1], pts[:, 0] - pts[:, 1]
            polygon = [tuple(pts[np.argmin(s)]), tuple(pts[np.argmax(d)]), tuple(pts[np.argmax(s)]), tuple(pts[np.argmin(d)])]
        if len(polygon) >= 3:
            draw.polygon([(float(x), float(y)) for x, y in polygon], fill=1, outline=1)
    return np.asarray(out).astype(bool)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--models", type=Path, default=Path("exported_models"))
    args = parser.parse_args()
    registry = ModelRegistry.load(args.models, providers=["CPUExecutionProvider"], warmup=False)
    samples = read_aasce_dataset(args.data_dir)
    _, val_idx = aasce_sample_split(samples)

    bands = np.zeros(6)  # wrong pixels within 1..5 px of the labelled edge, then farther
    beyond_rows = total_wrong = 0
    shaped: dict[str, list[float]] = {"as predicted": [], "convex hull per vertebra": [], "corner quadrilateral per vertebra": []}
    ceiling, coverage = [], []
    by_level = np.zeros((len(val_idx), N_VERTEBRAE))
    for row, i in enumerate(val_idx):
        sample = samples[i]
        image = sample.image()
        truth = sample.vertebra_mask(image.shape[0], image.shape[1])
        result = Segmenter(registry).segment(image, "AP", ["Ap_Vertebra"])
        predicted = result.model_frame_masks["Ap_Vertebra"]
        labelled = letterbox_mask(truth, predicted.shape)

        wrong = predicted ^ labelled
        total_wrong += int(wrong.sum())
        rows = np.flatnonzero(labelled.any(axis=1))
        within_rows = np.zeros_like(wrong)
        within_rows[rows[0] : rows[-1] + 1] = True
        beyond_rows += int((wrong & ~within_rows).sum())
        inside, outside, counted = labelled.copy(), ~labelled, 0
        for k in range(5):
            inside, outside = _grow(inside), _grow(outside)
            near = int((wrong & within_rows & ((predicted & ~labelled & inside) | (labelled & ~predicted & outside))).sum())
            bands[k] += near - counted
            counted = near
        bands[5] += int((wrong & within_rows).sum()) - counted

        shaped["as predicted"].append(dice(predicted, labelled))
        shaped["convex hull per vertebra"].append(dice(_reshaped(predicted, "hull"), labelled))
        shaped["corner quadrilateral per vertebra"].append(dice(_reshaped(predicted, "quad"), labelled))

        for level, (top, bottom) in enumerate(level_bands(sample.landmarks, *truth.shape)):
            by_level[row, level] = dice(result.masks["Ap_Vertebra"][top:bottom], truth[top:bottom])

        box = CropBox.around_mask(result.masks["Ap_Vertebra"], REFINE_INPUT_HW)
        if box is not None:
            back = crop_probabilities_to_source(crop_mask(truth, box).astype(np.float32), box) >= 0.5
            ceiling.append(dice(back, truth))
            coverage.append(box.cut(truth.astype(np.float32)).sum() / max(int(truth.sum()), 1))

    print(f"{len(val_idx)} validation images\n")
    print("Wrong pixels of the first stage (model frame), by distance to the labelled edge:\n")
    print("| within 1 px | 2 px | 3 px | 4 px | 5 px | farther | beyond the labelled rows |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    shares = [f"{b / total_wrong:.1%}" for b in bands] + [f"{beyond_rows / total_wrong:.1%}"]
    print("| " + " | ".join(shares) + " |")
    print("\nDice in the model frame, masks reshaped like the labels:\n")
    print("| mask | mean | median |\n| --- | --- | --- |")
    for name, values in shaped.items():
        print(f"| {name} | {np.mean(values):.4f} | {np.median(values):.4f} |")
    print("\nDice per vertebral level at the original size (band of rows from mid-disc to mid-disc):\n")
    print("| | " + " | ".join(LEVELS) + " |")
    print("| --- " * (N_VERTEBRAE + 1) + "|")
    print("| mean | " + " | ".join(f"{v:.3f}" for v in by_level.mean(axis=0)) + " |")
    print("| median | " + " | ".join(f"{v:.3f}" for v in np.median(by_level, axis=0)) + " |")
    print(
        f"\nSecond-stage windows ({len(ceiling)} placed): ground truth through the window and back, Dice mean "
        f"{np.mean(ceiling):.4f} (min {np.min(ceiling):.4f}); labelled pixels inside the window mean "
        f"{np.mean(coverage):.2%} (min {np.min(coverage):.2%})"
    )


if __name__ == "__main__":
    main()
