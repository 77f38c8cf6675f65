"""How much of Ap_Vertebra's missing Dice the AASCE labels themselves may hold.

.venv/bin/python scripts/ap_vertebra_label_noise.py ../shared/data/aasce-train [--models exported_models]

The masks are quadrilaterals through hand-placed corner landmarks, so corner placement noise is label
noise. There is one annotation per film, so the noise is estimated from how unsmooth the corners are
along the spine: for each corner coordinate (x and y of TL, TR, BL, BR) taken as a series over the 17
vertebrae, the second and third differences of independent noise of std s have std s*sqrt(6) and
s*sqrt(20); true anatomy (curves, growing vertebra heights, wedging) adds to both, so the estimate is an
upper bound on s. Pixel figures are scaled by each film's mean vertebra height, so films of different
sizes pool.

Then, on the 90 patient-held-out validation images at the original size:
  - Dice between a film's label and the same label with every corner moved by Gaussian noise of the
    estimated size (what a model that found the true corners would score against one noisy annotator,
    if the estimate were all noise), and of smaller and larger sizes (where the served model's Dice
    falls on that scale says how far off its corners are, in the same units);
  - the served first stage's Dice against the raw labels and against labels whose corners were smoothed
    along the spine (local quadratic over 5 vertebrae): a model closer to the smoothed labels predicts
    the smooth part of the annotation and not its jitter.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from spine_engine import ModelRegistry, Segmenter
from training.datasets import rasterize_vertebrae, read_aasce_dataset
from training.label_analysis import (
    corner_noise,
    corner_series,
    series_to_landmarks,
    smooth_along_spine,
    vertebra_height,
)
from training.metrics import dice
from training.splits import aasce_sample_split


def _label(series: np.ndarray, height: int, width: int) -> np.ndarray:
    return rasterize_vertebrae(series_to_landmarks(series, height, width), height, width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--models", type=Path, default=Path("exported_models"))
    parser.add_argument("--seeds", type=int, default=3, help="noise draws per film in the simulation")
    args = parser.parse_args()
    samples = read_aasce_dataset(args.data_dir)
    _, val_idx = aasce_sample_split(samples)

    sizes = []
    for sample in samples:
        with Image.open(sample.image_path) as img:
            sizes.append((img.height, img.width))
    films = [corner_series(s.landmarks, *size) for s, size in zip(samples, sizes, strict=True)]
    noise = corner_noise(films)
    print(f"{len(samples)} films; corner noise estimated from differences along the spine")
    print("(std as a share of the film's mean vertebra height; an upper bound, anatomy included):\n")
    print("| from | x | y |\n| --- | --- | --- |")
    for order, name in ((2, "second"), (3, "third")):
        print(f"| {name} differences | {noise[order, 'x']:.3f} | {noise[order, 'y']:.3f} |")
    heights = [vertebra_height(films[i]) for i in val_idx]
    print(
        f"\nValidation films: mean vertebra height {np.mean(heights):.1f} px at the original size "
        f"(median {np.median(heights):.1f})."
    )

    sigma = np.array([noise[3, "x"], noise[3, "y"]])
    shares = [3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.25]
    simulated: dict[float, list[float]] = {s: [] for s in shares}
    rng = np.random.default_rng(0)
    registry = ModelRegistry.load(args.models, providers=["CPUExecutionProvider"], warmup=False)
    against_raw, against_smooth, raw_vs_smooth = [], [], []
    for i in val_idx:
        height, width = sizes[i]
        series = films[i]
        truth = _label(series, height, width)
        for share in shares:
            for _ in range(args.seeds):
                jitter = rng.normal(size=series.shape) * sigma * share * vertebra_height(series)
                simulated[share].append(dice(_label(series + jitter, height, width), truth))
        smooth = _label(smooth_along_spine(series), height, width)
        predicted = Segmenter(registry).segment(samples[i].image(), "AP", ["Ap_Vertebra"]).masks["Ap_Vertebra"]
        against_raw.append(dice(predicted, truth))
        against_smooth.append(dice(predicted, smooth))
        raw_vs_smooth.append(dice(smooth, truth))

    print(f"\n{len(val_idx)} validation films at the original size ({args.seeds} noise draws each):\n")
    print("| corner noise (x, y; share of vertebra height) | label vs noisy label, Dice mean | median |")
    print("| --- | --- | --- |")
    for share in shares:
        note = " (the third-difference bound)" if share == 1.0 else ""
        x, y = sigma * share
        print(f"| {x:.3f}, {y:.3f}{note} | {np.mean(simulated[share]):.4f} | {np.median(simulated[share]):.4f} |")
    print("\n| served first stage against | Dice mean | median |\n| --- | --- | --- |")
    print(f"| raw labels | {np.mean(against_raw):.4f} | {np.median(against_raw):.4f} |")
    print(f"| labels smoothed along the spine | {np.mean(against_smooth):.4f} | {np.median(against_smooth):.4f} |")
    closer = np.mean(np.array(against_smooth) > np.array(against_raw))
    print(
        f"\nRaw vs smoothed labels: Dice mean {np.mean(raw_vs_smooth):.4f}; the first stage scores higher against "
        f"the smoothed labels on {closer:.0%} of the films."
    )


if __name__ == "__main__":
    main()
