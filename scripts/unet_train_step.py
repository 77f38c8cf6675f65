"""Training-step time of the U-Net on this machine, per image, for a few widths: what a training run of a
given length costs here before starting it.

.venv/bin/python scripts/unet_train_step.py [--filters 16 24 32] [--frame 512 256] [--batch-size 8]

Random inputs (a step's cost does not depend on the pixels), Dice+BCE, Adam, the Keras backend in
KERAS_BACKEND; one untimed step, then the median of --runs timed steps.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np

from training.models import build_unet
from training.train import dice_bce_loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--filters", type=int, nargs="+", default=[16, 24, 32])
    parser.add_argument("--frame", type=int, nargs=2, default=[512, 256], metavar=("H", "W"))
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--images", type=int, default=391, help="images per epoch (the AASCE training split)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    shape = (args.batch_size, *args.frame, 1)
    x = rng.random(shape, dtype=np.float32)
    y = (rng.random(shape) > 0.9).astype(np.float32)
    print(f"backend {keras.backend.backend()}, frame {args.frame[0]}x{args.frame[1]}, batch {args.batch_size}\n")
    print("| base filters | parameters | s per image | epoch of", args.images, "images (s) |")
    print("| --- | --- | --- | --- |")
    for filters in args.filters:
        model = build_unet(tuple(args.frame), filters=filters, num_layers=4, bn_momentum=0.9)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=dice_bce_loss)
        model.train_on_batch(x, y)
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            model.train_on_batch(x, y)
            times.append(time.perf_counter() - start)
        per_image = float(np.median(times)) / args.batch_size
        print(f"| {filters} | {model.count_params() / 1e6:.1f} M | {per_image:.3f} | {per_image * args.images:.0f} |")


if __name__ == "__main__":
    main()
