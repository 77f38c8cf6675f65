"""Export trained Keras weights to ONNX with tf2onnx, check parity, and record them in the manifest.

A library: the `spine-export` command line (unet, classifier, annotate, quantize) is in `training/cli.py`.

Every export is compared with the Keras model on real (cached) inputs; an export whose
probabilities differ by more than 1e-4 is refused and nothing is written to the manifest.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from pathlib import Path

import numpy as np

from spine_core.manifest import ModelEntry, load_manifest, save_manifest, sha256_file, upsert_model
from spine_core.preprocessing import (
    MASK_THRESHOLD,
    UNET_INPUT_HW,
    mask_to_classifier_input,
    preprocessing_spec,
    refine_preprocessing_spec,
)
from spine_core.structures import CLASSES, CLASSIFIER_MODEL_NAME, STRUCTURES, refinement_model_name
from training.splits import aasce_split

log = logging.getLogger("spine-export")

OPSET = 17
PARITY_TOLERANCE = 1e-4


class ParityError(RuntimeError):
    pass


def keras_to_onnx(model, onnx_path: Path, input_name: str, output_name: str, opset: int = OPSET) -> None:
    """tf2onnx conversion with a dynamic batch dimension and stable tensor names."""
    import onnx
    import tensorflow as tf
    import tf2onnx

    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    spec = (tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=input_name),)
    proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    graph_outputs = [o.name for o in proto.graph.output]
    if graph_outputs != [output_name]:
        # Rename the graph output (and every reference to it) to the contract's name.
        (old,) = graph_outputs
        for node in proto.graph.node:
            node.output[:] = [output_name if o == old else o for o in node.output]
            node.input[:] = [output_name if i == old else i for i in node.input]
        proto.graph.output[0].name = output_name
    proto.producer_name = "spine-xray/tf2onnx"
    onnx.checker.check_model(proto)
    onnx.save(proto, onnx_path)


def parity(model, onnx_path: Path, inputs: np.ndarray, input_name: str) -> float:
    """Max |Keras - onnxruntime| over the given inputs (CPU provider, exact float32)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    expected = np.asarray(model.predict(inputs, batch_size=4, verbose=0))
    got = session.run(None, {input_name: inputs.astype(np.float32)})[0]
    return float(np.max(np.abs(expected - got)))


def _export_and_check(model, models_dir: Path, name: str, parity_inputs: np.ndarray, input_name: str, output_name: str):
    onnx_path = models_dir / name / "1" / "model.onnx"
    keras_to_onnx(model, onnx_path, input_name, output_name)
    diff = parity(model, onnx_path, parity_inputs, input_name)
    print(f"{name}: parity max |keras - onnx| = {diff:.3g} on {len(parity_inputs)} real inputs (tolerance {PARITY_TOLERANCE})")
    if not diff <= PARITY_TOLERANCE:
        onnx_path.unlink()
        raise ParityError(f"{name}: ONNX export differs from Keras by {diff:.3g} > {PARITY_TOLERANCE}")
    return onnx_path, diff


def _now() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def _parity_inputs_unet(cache_path: Path, structure: str, n: int = 4) -> np.ndarray:
    from training.cache import load_aasce_cache, load_course_cache

    with np.load(cache_path) as z:
        is_aasce = "patient_keys" in z.files
    if is_aasce:
        data = load_aasce_cache(cache_path)
        _, val_idx = aasce_split(data)
        images = data["images"][val_idx[:n]]
    else:
        images = np.stack([s["image"] for s in load_course_cache(cache_path) if structure in s["masks"]])
    return (images.astype(np.float32) / 255.0)[..., np.newaxis]


def _course_training_arrays(cache_path: Path, structure: str) -> tuple[np.ndarray, np.ndarray]:
    from training.cache import load_course_cache

    samples = [s for s in load_course_cache(cache_path) if structure in s["masks"]]
    return np.stack([s["image"] for s in samples]), np.stack([s["masks"][structure] for s in samples])


def export_unet(
    run_dir: Path,
    cache_path: Path,
    models_dir: Path,
    holdout_run: Path | None = None,
    recalibrate_bn: int = 0,
    combine: str = "replace",
) -> ModelEntry:
    from training.models import UNET_INPUT_NAME, UNET_OUTPUT_NAME, build_unet

    info = json.loads((run_dir / "run_info.json").read_text())
    structure = info["structure"]
    refines = info.get("refines")  # a second-stage model: its own name, it serves `refines`' structure
    name = refinement_model_name(structure) if refines else structure
    input_hw = tuple(info.get("input_hw", UNET_INPUT_HW))
    model = build_unet(input_hw, filters=info["filters"], num_layers=info["num_layers"])
    model.load_weights(run_dir / "best.weights.h5")
    if recalibrate_bn:
        from training.train import recalibrate_batchnorm

        recalibrate_batchnorm(model, *_course_training_arrays(cache_path, structure), passes=recalibrate_bn)
        model.save_weights(run_dir / "recalibrated.weights.h5")
    onnx_path, diff = _export_and_check(
        model, models_dir, name, _parity_inputs_unet(cache_path, structure), UNET_INPUT_NAME, UNET_OUTPUT_NAME
    )
    # Figures measured during training, in the model's letterboxed frame; spine-evaluate adds original-size ones.
    prefix = {
        "held-out study": "heldout_model_frame_",
        "held-out studies": "heldout_model_frame_",
        "training images": "training_images_model_frame_",
    }.get(info.get("validation_set", ""), "window_frame_" if refines else "model_frame_")
    metrics = {f"{prefix}{k}": v for k, v in info["metrics"].items()}
    notes = (
        f"U-Net ({info['filters']} base filters, {info['num_layers']} levels, {info['loss']} loss), "
        f"best epoch {info['best_epoch']}."
    )
    split = info["split"]
    if holdout_run is not None:
        held = json.loads((holdout_run / "run_info.json").read_text())
        metrics = {
            "heldout_dice": held["metrics"]["val_dice_mean"],
            "heldout_protocol": f"separate run, {held['split']}, {held['epochs']} epochs, model frame",
            "training_images_dice": info["metrics"]["val_dice_mean"],
        }
        split = f"{split}; held-out figure from a separate run that {held['split']}"
    if recalibrate_bn:
        notes += f" BatchNorm statistics re-estimated after training ({recalibrate_bn} passes over augmented training images)."
    if refines:
        notes = (
            f"Second stage of {refines}: re-segments a window around the first stage's mask at {input_hw[0]}x{input_hw[1]} "
            f"(the service serves its mask as {structure}'s). " + notes
        )
    if not info["validated"]:
        notes = (
            "DEMONSTRATION MODEL: trained on public sample studies only (see training_data); "
            "not validated, not for clinical or research use. " + notes
        )
    entry = ModelEntry(
        name=name,
        kind="refinement" if refines else "segmentation",
        refines=refines,
        combine=combine if refines else "replace",
        structure=structure,
        view=STRUCTURES[structure],
        file=str(onnx_path.relative_to(models_dir)),
        sha256=sha256_file(onnx_path),
        input_name=UNET_INPUT_NAME,
        output_name=UNET_OUTPUT_NAME,
        input_shape=[None, *input_hw, 1],
        output_shape=[None, *input_hw, 1],
        preprocessing=(
            {**refine_preprocessing_spec(), "input_hw": list(input_hw)}
            if refines
            else {**preprocessing_spec(), "unet_input_hw": list(input_hw)}
        ),
        threshold=MASK_THRESHOLD,
        architecture="U-Net (keras-unet custom_unet design)",
        architecture_config={
            "builder": "training.models.build_unet",
            "input_hw": list(input_hw),
            "filters": info["filters"],
            "num_layers": info["num_layers"],
        },
        parameters=int(model.count_params()),
        opset=OPSET,
        training_data=info["training_data"],
        split=split,
        epochs=info["epochs"],
        training_time_s=info.get("training_time_s"),
        trained_on=info.get("trained_on"),
        metrics=metrics,
        parity_max_abs_diff=diff,
        validated=bool(info["validated"]),
        notes=notes,
    )
    upsert_model(models_dir, entry, _now())
    return entry


def export_classifier(run_dir: Path, cache_path: Path, models_dir: Path) -> ModelEntry:
    from training.cache import load_aasce_cache
    from training.models import CLASSIFIER_INPUT_NAME, CLASSIFIER_OUTPUT_NAME, build_classifier

    info = json.loads((run_dir / "run_info.json").read_text())
    data = load_aasce_cache(cache_path)
    _, val_idx = aasce_split(data)
    inputs = np.stack([mask_to_classifier_input(m) for m in data["masks"][val_idx[:16]]])[..., np.newaxis]
    model = build_classifier(inputs.shape[1:3])
    model.load_weights(run_dir / "best.weights.h5")
    onnx_path, diff = _export_and_check(
        model, models_dir, CLASSIFIER_MODEL_NAME, inputs, CLASSIFIER_INPUT_NAME, CLASSIFIER_OUTPUT_NAME
    )
    entry = ModelEntry(
        name=CLASSIFIER_MODEL_NAME,
        kind="classification",
        file=str(onnx_path.relative_to(models_dir)),
        sha256=sha256_file(onnx_path),
        input_name=CLASSIFIER_INPUT_NAME,
        output_name=CLASSIFIER_OUTPUT_NAME,
        input_shape=[None, *inputs.shape[1:3], 1],
        output_shape=[None, 2],
        preprocessing=preprocessing_spec(),
        classes=list(CLASSES),
        architecture="ResNet50 (keras.applications, weights=None) + dropout + softmax(2)",
        architecture_config={"builder": "training.models.build_classifier", "input_hw": list(inputs.shape[1:3])},
        parameters=int(model.count_params()),
        opset=OPSET,
        training_data=info["training_data"],
        split=info["split"],
        epochs=info["epochs"],
        training_time_s=info.get("training_time_s"),
        trained_on=info.get("trained_on"),
        metrics=info["metrics"],
        parity_max_abs_diff=diff,
        validated=bool(info["validated"]),
        notes=(
            "Scores one mask Normal/Damaged. Trained on AP vertebral-body masks only (the only labelled masks available); "
            "its scores on other structures are untested. Damaged means a Cobb angle at or above the threshold."
        ),
    )
    upsert_model(models_dir, entry, _now())
    return entry


def annotate(models_dir: Path, model: str, metrics: dict, prefix: str = "", variant: str | None = None) -> None:
    """Merge measured figures (e.g. from spine-evaluate) into one model's (or one of its variants') manifest metrics."""
    manifest = load_manifest(models_dir)
    entry = manifest.by_name()[model]
    target = entry.variants[variant].metrics if variant else entry.metrics
    target.update({f"{prefix}{k}": v for k, v in metrics.items()})
    save_manifest(manifest, models_dir)


def flatten(d: dict, parent: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{parent}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out
