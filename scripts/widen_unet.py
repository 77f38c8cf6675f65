"""Widen a frozen-BatchNorm U-Net's weights to more base filters, output unchanged (training/widen.py).

.venv/bin/python scripts/widen_unet.py runs/ap_init.weights.h5 runs/ap_w24_init.weights.h5 \
    --filters-from 16 --filters 24 --check-cache .devdata/aasce.npz

then `spine-train unet ... --filters 24 --init-weights runs/ap_w24_init.weights.h5 --freeze-bn`.
The weights are written only if the wider model reproduces the narrow one on real cached images to 1e-5.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from spine_core.preprocessing import UNET_INPUT_HW
from training.models import build_unet
from training.widen import widen_unet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("weights", help="the narrow model's .weights.h5 (e.g. from scripts/onnx_to_keras_weights.py)")
    parser.add_argument("out")
    parser.add_argument("--filters-from", type=int, default=16)
    parser.add_argument("--filters", type=int, required=True)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check-cache", default=None, help="npz from `spine-train cache`: parity on its first images")
    args = parser.parse_args()
    narrow = build_unet(UNET_INPUT_HW, filters=args.filters_from, num_layers=args.num_layers)
    narrow.load_weights(args.weights)
    wide = widen_unet(narrow, args.filters, args.num_layers, UNET_INPUT_HW, seed=args.seed)
    if args.check_cache:
        from training.cache import first_cached_images

        x = first_cached_images(args.check_cache)
        diff = float(np.abs(np.asarray(wide(x, training=False)) - np.asarray(narrow(x, training=False))).max())
        print(f"wide vs narrow on 4 real images: max abs difference {diff:.2e}")
        if diff > 1e-5:
            raise SystemExit("the widened model does not reproduce the narrow one: weights not written")
    wide.save_weights(args.out)
    print(f"{args.out}: {args.filters_from} -> {args.filters} base filters, {wide.count_params() / 1e6:.2f} M parameters")


if __name__ == "__main__":
    main()
