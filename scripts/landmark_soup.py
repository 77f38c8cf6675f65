"""Average landmark-model checkpoints of fine-tuning runs from one start (a "model soup") into a new run folder.

    .venv/bin/python scripts/landmark_soup.py --cache .devkit/lm/landmarks_q95.npz --out runs/landmarks_soup \
        runs/gpu2/ends_lr3/best.weights.h5 runs/gpu2/ends_lr3/best_levels.weights.h5 \
        runs/gpu2/ends_lr3_w2/best.weights.h5 runs/gpu2/ends_lr3_w2/best_levels.weights.h5

Why: fine-tuned on a GPU at a learning rate of 3e-4, the validation figures jump from epoch to epoch (SMAPE 10-14 %),
so one epoch's weights carry that epoch's luck; the mean of the weights of a few good epochs of runs that started
from the same weights (BatchNorm is frozen, so the average is a plain one) is steadier. The folder gets
`best.weights.h5` and a `run_info.json` whose metrics are the soup's own, measured on the validation frames
the same way training measures them, so `spine-export landmarks --run-dir OUT` takes it like any run.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.landmarks import build_landmark_model, evaluate_heads, load_landmark_cache, predict
from training.splits import aasce_split
from training.train import as_float


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", nargs="+", help=".weights.h5 files of one architecture (11-channel landmark models)")
    parser.add_argument("--cache", required=True, help="spine-train cache aasce-landmarks ...")
    parser.add_argument("--out", required=True, help="the new run folder")
    args = parser.parse_args()
    first_info = json.loads((Path(args.weights[0]).parent / "run_info.json").read_text())
    models = []
    for path in args.weights:
        model = build_landmark_model(tuple(first_info["input_hw"]))
        model.load_weights(path)
        models.append(model)
    soup = models[0]
    soup.set_weights([np.mean(ws, axis=0) for ws in zip(*[m.get_weights() for m in models], strict=True)])
    data = load_landmark_cache(Path(args.cache))
    _, val_idx = aasce_split(data)
    heads = predict(soup, as_float(data["images"][val_idx]))
    metrics = evaluate_heads(heads, data["corners"][val_idx], data["cobb"][val_idx])
    metrics.pop("val_score")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    soup.save_weights(out / "best.weights.h5")
    runs = [json.loads((folder / "run_info.json").read_text()) for folder in sorted({Path(p).parent for p in args.weights})]
    info = {  # the runs' epochs and training time added up: what the soup cost
        **first_info,
        "metrics": metrics,
        "soup_of": args.weights,
        "epochs": sum(r["epochs"] for r in runs),
        "training_time_s": round(sum(r["training_time_s"] for r in runs), 1),
    }
    (out / "run_info.json").write_text(json.dumps(info, indent=1))
    print(json.dumps(info, indent=1))


if __name__ == "__main__":
    main()
