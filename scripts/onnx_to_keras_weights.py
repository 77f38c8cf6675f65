"""Read an exported U-Net's ONNX weights back into Keras (for fine-tuning with `spine-train unet --freeze-bn`).

PYTHONPATH=. .venv/bin/python scripts/onnx_to_keras_weights.py exported_models/Ap_Vertebra/1/model.onnx \
    runs/ap_init.weights.h5 --filters 16 --num-layers 4 --check-cache .devdata/aasce.npz
PYTHONPATH=. .venv/bin/python scripts/onnx_to_keras_weights.py exported_models/Ap_Vertebra_landmarks/1/model.onnx \
    .devkit/lm/landmarks_served.weights.h5 --landmarks     (for `spine-train landmarks --init-landmarks`)

The export folded BatchNormalization into the convolutions, so the Keras model gets identity BatchNorm
layers and the folded kernels (benchmarks.keras_weights, the loader the benchmarks use); the weights are
written only if Keras reproduces onnxruntime's output on real cached images to 1e-4.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np
import onnxruntime as ort

from benchmarks.keras_weights import keras_with_onnx_weights
from spine_core.preprocessing import UNET_INPUT_HW


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("onnx")
    parser.add_argument("out", help="a .weights.h5 file for `spine-train unet --init-weights`")
    parser.add_argument("--filters", type=int, default=16)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--check-cache", default=None, help="npz from `spine-train cache`: parity on its first images")
    parser.add_argument("--landmarks", action="store_true", help="the landmark model (its heads read off the ONNX output)")
    args = parser.parse_args()
    config = {
        "builder": "training.models.build_unet",
        "input_hw": list(UNET_INPUT_HW),
        "filters": args.filters,
        "num_layers": args.num_layers,
    }
    if args.landmarks:
        from spine_core.landmarks import ENDS_CHANNEL, LEVEL_CHANNEL

        channels = ort.InferenceSession(args.onnx, providers=["CPUExecutionProvider"]).get_outputs()[0].shape[-1]
        config = {
            "builder": "training.landmarks.build_landmark_model",
            "input_hw": list(UNET_INPUT_HW),
            "ends_head": channels > ENDS_CHANNEL,
            "level_head": channels > LEVEL_CHANNEL,
        }
    model, info = keras_with_onnx_weights(config, args.onnx)
    if info["weights"] != "onnx":
        raise SystemExit(f"weights not transferred: {info}")
    if args.check_cache:
        from training.cache import first_cached_images

        x = first_cached_images(args.check_cache)
        session = ort.InferenceSession(args.onnx, providers=["CPUExecutionProvider"])
        got = session.run(None, {session.get_inputs()[0].name: x})[0]
        diff = float(np.abs(np.asarray(model(x, training=False)) - got).max())
        print(f"parity on 4 real images: {diff:.2e}")
        if diff > 1e-4:
            raise SystemExit("Keras does not reproduce the ONNX model: weights not written")
    model.save_weights(args.out)
    print(f"{args.out}: {info}")


if __name__ == "__main__":
    main()
