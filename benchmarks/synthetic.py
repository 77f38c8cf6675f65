"""A models directory of random-weight models with the committed architectures (for development and CI).

The manifest entries carry the same `architecture_config` as the real export (builder + arguments), so
every section of the suite runs on it exactly as on `exported_models/`; only the weights differ, and
no timing in this suite depends on weight values. Like the committed U-Nets, the synthetic ones get an
int8 variant (training.quantize, calibrated on a few generated radiographs); the classifier does not.
"""

from __future__ import annotations

import datetime as dt
import importlib
import io
from pathlib import Path
from typing import Any

import numpy as np

from spine_core.manifest import Manifest, ModelEntry, save_manifest, sha256_file
from spine_core.preprocessing import MASK_THRESHOLD, preprocessing_spec, refine_preprocessing_spec
from spine_core.structures import CLASSES, CLASSIFIER_MODEL_NAME, STRUCTURES, refinement_model_name

UNET_CONFIG: dict[str, Any] = {"builder": "training.models.build_unet", "input_hw": [512, 256], "filters": 16, "num_layers": 4}
CLASSIFIER_CONFIG: dict[str, Any] = {"builder": "training.models.build_classifier", "input_hw": [128, 64]}
# Small stand-ins for the CI smoke test: same builders' families, a fraction of the work.
TINY_UNET_CONFIG: dict[str, Any] = {"builder": "training.models.build_unet", "input_hw": [64, 32], "filters": 4, "num_layers": 2}
TINY_CLASSIFIER_CONFIG: dict[str, Any] = {"builder": "benchmarks.synthetic.build_tiny_classifier", "input_hw": [32, 16]}


def build_tiny_classifier(input_hw: tuple[int, int] = (32, 16)):
    """A few convolutions and a softmax(2) head: the classifier's contract at a fraction of ResNet50's cost."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=(*input_hw, 1), name="mask")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="tiny_conv1")(inputs)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="tiny_conv2")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(2, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="tiny_mask_classifier")


def build_from_config(config: dict[str, Any]):
    """Rebuild the Keras model a manifest entry's `architecture_config` describes."""
    module_name, _, func_name = str(config["builder"]).rpartition(".")
    builder = getattr(importlib.import_module(module_name), func_name)
    kwargs = {k: (tuple(v) if k == "input_hw" else v) for k, v in config.items() if k != "builder"}
    return builder(**kwargs)


def _entry(models_dir: Path, name: str, model, config: dict[str, Any], onnx_path: Path, refines: str | None = None) -> ModelEntry:
    hw = list(config["input_hw"])
    is_seg = name != CLASSIFIER_MODEL_NAME
    common: dict[str, Any] = {
        "name": name,
        "file": str(onnx_path.relative_to(models_dir)),
        "sha256": sha256_file(onnx_path),
        "preprocessing": refine_preprocessing_spec() if refines else preprocessing_spec(),
        "architecture_config": config,
        "parameters": int(model.count_params()),
        "opset": 17,
        "training_data": "none: random weights (benchmark stand-in)",
        "split": "none",
        "epochs": 0,
        "validated": False,
        "notes": "random-weight model with the production architecture, built by benchmarks.synthetic",
    }
    if is_seg:
        structure = refines or name  # a second stage serves the structure it refines
        return ModelEntry(
            kind="refinement" if refines else "segmentation",
            refines=refines,
            structure=structure,
            view=STRUCTURES[structure],
            input_name="image",
            output_name="mask",
            input_shape=[None, *hw, 1],
            output_shape=[None, *hw, 1],
            threshold=MASK_THRESHOLD,
            architecture="U-Net (random weights)",
            **common,
        )
    return ModelEntry(
        kind="classification",
        input_name="mask",
        output_name="probabilities",
        input_shape=[None, *hw, 1],
        output_shape=[None, 2],
        classes=list(CLASSES),
        architecture="classifier (random weights)",
        **common,
    )


def generated_unet_inputs(input_hw: tuple[int, int], seeds: range) -> list[np.ndarray]:
    """(1, H, W, 1) U-Net inputs preprocessed from generated radiographs (small ones: only the shape matters)."""
    from PIL import Image

    from benchmarks.http_bench import generated_radiograph
    from spine_core.preprocessing import preprocess_image, to_unet_batch

    out = []
    for seed in seeds:
        with Image.open(io.BytesIO(generated_radiograph(580, 390, seed=seed))) as im:
            x, _ = preprocess_image(np.asarray(im), input_hw)
        out.append(to_unet_batch([x]))
    return out


def add_int8_variants(models_dir: Path, names: list[str], input_hw: tuple[int, int]) -> None:
    """int8 variants of the U-Nets `names` (static QDQ, as training.quantize makes the committed ones)."""
    from training.quantize import add_int8_variant

    calibration = generated_unet_inputs(input_hw, range(100, 104))
    check = generated_unet_inputs(input_hw, range(200, 202))  # not seen by the calibration
    what = f"{len(calibration)} generated radiographs (benchmark stand-in); agreement on {len(check)} others"
    for name in names:
        add_int8_variant(models_dir, name, calibration, check, what)


def write_synthetic_models(
    models_dir: Path,
    structures: list[str] | None = None,
    unet_config: dict[str, Any] | None = None,
    classifier_config: dict[str, Any] | None = None,
    seed: int = 0,
    int8: bool = True,
    refine: bool = True,
) -> Path:
    """Export random-weight Keras models to `<models_dir>/<name>/1/model.onnx` and write the manifest.

    `int8`: also give every U-Net an int8 variant (`<name>/1/model.int8.onnx`, manifest `variants["int8"]`).
    `refine`: also a second-stage `Ap_Vertebra_refine` (the U-Net at twice the height, as the committed one).
    """
    import keras

    from training.export import keras_to_onnx

    models_dir = Path(models_dir)
    models_dir.mkdir(parents=True, exist_ok=True)
    unet_config = dict(unet_config or UNET_CONFIG)
    classifier_config = dict(classifier_config or CLASSIFIER_CONFIG)
    entries = []
    names = list(structures or STRUCTURES)
    for i, name in enumerate([*names, CLASSIFIER_MODEL_NAME]):
        keras.utils.set_random_seed(seed + i)
        config = classifier_config if name == CLASSIFIER_MODEL_NAME else unet_config
        model = build_from_config(config)
        onnx_path = models_dir / name / "1" / "model.onnx"
        in_name, out_name = ("mask", "probabilities") if name == CLASSIFIER_MODEL_NAME else ("image", "mask")
        keras_to_onnx(model, onnx_path, in_name, out_name)
        entries.append(_entry(models_dir, name, model, config, onnx_path))
    if refine and "Ap_Vertebra" in names:
        h, w = unet_config["input_hw"]
        config = {**unet_config, "input_hw": [2 * h, w]}
        model = build_from_config(config)
        name = refinement_model_name("Ap_Vertebra")
        onnx_path = models_dir / name / "1" / "model.onnx"
        keras_to_onnx(model, onnx_path, "image", "mask")
        entries.append(_entry(models_dir, name, model, config, onnx_path, refines="Ap_Vertebra"))
    created = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    save_manifest(Manifest(created=created, models=entries), models_dir)
    if int8:
        add_int8_variants(models_dir, names, tuple(unet_config["input_hw"]))
    return models_dir


def main(argv: list[str] | None = None) -> int:
    import argparse
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    parser = argparse.ArgumentParser(prog="python -m benchmarks.synthetic", description=__doc__)
    parser.add_argument("models_dir", type=Path)
    parser.add_argument("--tiny", action="store_true", help="small stand-ins (CI smoke test)")
    parser.add_argument("--structures", default=None, help="comma-separated subset (default: all eight)")
    parser.add_argument("--no-int8", action="store_true", help="no int8 variants of the U-Nets")
    parser.add_argument("--no-refine", action="store_true", help="no second-stage Ap_Vertebra_refine")
    args = parser.parse_args(argv)
    structures = args.structures.split(",") if args.structures else None
    write_synthetic_models(
        args.models_dir,
        structures,
        TINY_UNET_CONFIG if args.tiny else None,
        TINY_CLASSIFIER_CONFIG if args.tiny else None,
        int8=not args.no_int8,
        refine=not args.no_refine,
    )
    print(args.models_dir)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
