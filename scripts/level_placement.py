"""How the landmark decoder places the 17 levels, on the training and validation frames of the landmark cache.

    .venv/bin/python scripts/level_placement.py --cache .devdata/landmarks.npz \
        --model exported_models/Ap_Vertebra_landmarks/1/model.onnx [--shape 0 0.5 1 2] [--ends 0 1 4] [--level 0 1 2] \
        [--flip] [--validation-only]

Runs the model once on every frame (whole 512x256 frames, as validation does), then decodes with each setting:
SMAPE (the served decoder's Cobb angles against angles.csv) and level accuracy (the median offset of the 17
vertebrae against the labels, in steps, under half a step), with the shares placed too high and too low.
`--flip` also scores heads averaged with those of the mirrored frame (test-time augmentation).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import spine_core.landmarks as decoder
from spine_core.cobb import cobb_angles
from spine_core.landmark_metrics import chain_offset, smape_pct
from training.landmarks import load_landmark_cache
from training.splits import aasce_split


def run_model(session: ort.InferenceSession, frames: np.ndarray, mirrored: bool = False) -> np.ndarray:
    name = session.get_inputs()[0].name
    x = frames.astype(np.float32)[..., None] / 255.0
    if mirrored:
        x = x[:, :, ::-1].copy()
    heads = np.concatenate([session.run(None, {name: x[i : i + 4]})[0] for i in range(0, len(x), 4)])
    if mirrored:  # back to the film's orientation: left and right corners swap, x offsets change sign
        heads = heads[:, :, ::-1].copy()
        offsets = heads[..., 1:9].reshape(*heads.shape[:3], 4, 2)[..., [1, 0, 3, 2], :].copy()
        offsets[..., 0] *= -1
        heads[..., 1:9] = offsets.reshape(*heads.shape[:3], 8)
    return heads


def score(heads: np.ndarray, corners: np.ndarray, cobb: np.ndarray, typical_peak: float) -> dict[str, float]:
    smape, offsets = [], []
    for out, truth, angles in zip(heads, corners, cobb, strict=True):
        found = decoder.decode(out, typical_peak=typical_peak)
        if found is None:
            smape.append(100.0)
            offsets.append(np.inf)
            continue
        predicted = np.array(cobb_angles(found.corners, out.shape[0]).aasce_angles_deg)
        smape.append(smape_pct(predicted[None], angles[None]))
        offsets.append(chain_offset(found.corners, truth))
    off = np.array(offsets)
    return {
        "smape": float(np.mean(smape)),
        "level_accuracy": float(np.mean(np.abs(off) < 0.5)),
        "too_high": float(np.mean(off < -0.5)),
        "too_low": float(np.mean(off > 0.5)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", default=".devdata/landmarks.npz")
    parser.add_argument("--model", default="exported_models/Ap_Vertebra_landmarks/1/model.onnx")
    parser.add_argument("--typical-peak", type=float, default=0.59, help="the manifest's val_median_peak")
    parser.add_argument("--shape", type=float, nargs="*", default=[decoder.SHAPE_WEIGHT])
    parser.add_argument("--ends", type=float, nargs="*", default=[decoder.ENDS_WEIGHT])
    parser.add_argument("--level", type=float, nargs="*", default=[decoder.LEVEL_WEIGHT], help="a model with the level head")
    parser.add_argument("--flip", action="store_true")
    parser.add_argument("--validation-only", action="store_true")
    args = parser.parse_args()
    data = load_landmark_cache(Path(args.cache))
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    print("| frames | heads | shape weight | ends weight | level weight | SMAPE | level accuracy | too high | too low |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for split, idx in zip(("training", "validation"), aasce_split(data), strict=True):
        if args.validation_only and split == "training":
            continue
        variants = {"plain": run_model(session, data["images"][idx])}
        if args.flip:
            variants["flip-averaged"] = (variants["plain"] + run_model(session, data["images"][idx], mirrored=True)) / 2
        for label, heads in variants.items():
            for shape, ends, level in itertools.product(args.shape, args.ends, args.level):
                decoder.SHAPE_WEIGHT, decoder.ENDS_WEIGHT, decoder.LEVEL_WEIGHT = shape, ends, level
                r = score(heads, data["corners"][idx], data["cobb"][idx], args.typical_peak)
                print(
                    f"| {split} ({len(idx)}) | {label} | {shape} | {ends} | {level} | {r['smape']:.2f} % | "
                    f"{r['level_accuracy']:.3f} | {r['too_high']:.2f} | {r['too_low']:.2f} |"
                )


if __name__ == "__main__":
    main()
