"""Where Ap_Vertebra's validation Dice is lost: cheap inference-time levers and the frame's own ceiling.

.venv/bin/python scripts/ap_vertebra_headroom.py ../shared/data/aasce-train [--models exported_models]

On the 90 patient-held-out validation images, Dice at the original size of:
  - the exported model as served (threshold 0.5), with other thresholds, and with horizontal-flip
    test-time augmentation (mean of the two probability maps);
  - the ground-truth mask itself sent through the 512x256 letterbox and back: the ceiling that the
    model frame's resolution alone allows;
and the share of predicted pixels above the first or below the last labelled vertebra (the labels stop
at T1 and L5, so a model marking C7 or the sacrum is penalised there).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort

from spine_core.manifest import load_manifest
from spine_core.preprocessing import letterbox_mask, preprocess_image, probabilities_to_source_mask
from training.datasets import read_aasce_dataset
from training.metrics import dice
from training.splits import aasce_sample_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--models", type=Path, default=Path("exported_models"))
    args = parser.parse_args()
    entry = load_manifest(args.models).by_name()["Ap_Vertebra"]
    session = ort.InferenceSession(str(args.models / entry.file), providers=["CPUExecutionProvider"])
    hw = (int(entry.input_shape[1]), int(entry.input_shape[2]))  # type: ignore[arg-type]

    samples = read_aasce_dataset(args.data_dir)
    _, val_idx = aasce_sample_split(samples)
    rows: dict[str, list[float]] = {}
    outside: list[float] = []
    for i in val_idx:
        sample = samples[i]
        image = sample.image()
        truth = sample.vertebra_mask(image.shape[0], image.shape[1])
        x, box = preprocess_image(image, hw)
        prob = session.run(None, {entry.input_name: x[None, ..., None]})[0][0, ..., 0]
        flipped = session.run(None, {entry.input_name: np.ascontiguousarray(x[None, :, ::-1, None])})[0][0, :, ::-1, 0]
        both = (prob + flipped) / 2
        for name, p, t in [
            ("served (threshold 0.5)", prob, 0.5),
            ("threshold 0.4", prob, 0.4),
            ("threshold 0.6", prob, 0.6),
            ("flip TTA", both, 0.5),
            ("flip TTA, threshold 0.4", both, 0.4),
            ("ground truth through the frame (ceiling)", letterbox_mask(truth, hw).astype(np.float32), 0.5),
        ]:
            rows.setdefault(name, []).append(dice(probabilities_to_source_mask(p, box, t), truth))
        predicted = probabilities_to_source_mask(prob, box)
        labelled = np.flatnonzero(truth.any(axis=1))
        beyond = predicted.copy()
        beyond[labelled[0] : labelled[-1] + 1] = False
        outside.append(beyond.sum() / max(int(predicted.sum()), 1))

    print(f"{len(val_idx)} validation images, Dice at the original size\n")
    print("| variant | mean | median |\n| --- | --- | --- |")
    for name, values in rows.items():
        print(f"| {name} | {np.mean(values):.4f} | {np.median(values):.4f} |")
    print(f"\npredicted pixels beyond the labelled vertebrae: mean {np.mean(outside):.1%}")


if __name__ == "__main__":
    main()
