"""INT8 variants of exported models: onnxruntime static quantization, checked against the fp32 file.

spine-export quantize --model Ap_Vertebra --layout aasce --data ../shared/data/aasce-train
spine-export quantize --model Lat_Vertebra --layout course --data ../shared/data/course-samples --holdout-study ...

The fp32 graph stays the model of record; the int8 file sits beside it (`<name>/<version>/model.int8.onnx`)
and is listed under the manifest entry's `variants["int8"]`, served only when SPINE_PRECISION=int8.
Weights are quantized per output channel to int8, activations to uint8 with ranges calibrated on real
(training) images, in QDQ format, so onnxruntime fuses the pairs into integer kernels (VNNI on x86).
The agreement with the fp32 file is measured on images the calibration did not see.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from spine_core.landmarks import decode
from spine_core.manifest import ModelEntry, ModelVariant, load_manifest, save_manifest, sha256_file
from spine_core.preprocessing import MASK_THRESHOLD, mask_to_classifier_input, preprocess_image
from training.metrics import dice

log = logging.getLogger(__name__)

INT8_SUFFIX = ".int8.onnx"
METHOD = (
    "onnxruntime.quantization.quantize_static: QDQ format, int8 weights per output channel, uint8 activations, MinMax calibration"
)


def int8_path_for(fp32_path: Path) -> Path:
    """<name>/<version>/model.onnx -> <name>/<version>/model.int8.onnx"""
    return fp32_path.with_name(fp32_path.name.removesuffix(".onnx") + INT8_SUFFIX)


def quantize_int8(fp32_path: Path, out_path: Path, calibration: Sequence[np.ndarray], input_name: str) -> None:
    """Write the static-int8 graph of `fp32_path`; `calibration` holds NHWC float32 batches as the model takes them."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calibration:
        raise ValueError("quantization needs at least one calibration input")

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._batches = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {input_name: np.asarray(batch, dtype=np.float32)}

    with tempfile.TemporaryDirectory() as tmp:
        # Shape inference and constant folding first, as onnxruntime recommends (no sympy: shapes are static).
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        quantize_static(
            str(prepared),
            str(out_path),
            _Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
        )


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def measure_agreement(
    entry: ModelEntry, fp32_path: Path, int8_path: Path, inputs: Sequence[np.ndarray]
) -> dict[str, float | int]:
    """Outputs of the int8 file vs the fp32 file, one input batch at a time."""
    fp32, int8 = _session(fp32_path), _session(int8_path)
    max_diff, dices, same_label, corner_px = 0.0, [], [], []
    for batch in inputs:
        feed = {entry.input_name: np.asarray(batch, dtype=np.float32)}
        a = fp32.run([entry.output_name], feed)[0]
        b = int8.run([entry.output_name], feed)[0]
        max_diff = max(max_diff, float(np.abs(a - b).max()))
        if entry.kind == "segmentation":
            threshold = MASK_THRESHOLD if entry.threshold is None else entry.threshold
            dices += [dice(x >= threshold, y >= threshold) for x, y in zip(a, b, strict=True)]
        elif entry.kind == "landmarks":  # the decoded vertebrae of both, corner by corner (frame pixels)
            corner_px += [_corner_distance(x, y) for x, y in zip(a, b, strict=True)]
        else:
            same_label += list(a.argmax(axis=1) == b.argmax(axis=1))
    out: dict[str, float | int] = {"n_images": int(sum(len(b) for b in inputs)), "max_abs_diff": max_diff}
    if dices:
        out.update(mask_dice_vs_fp32_mean=float(np.mean(dices)), mask_dice_vs_fp32_min=float(np.min(dices)))
    if same_label:
        out["label_agreement"] = float(np.mean(same_label))
    if corner_px:
        found = [d for d in corner_px if np.isfinite(d)]
        out.update(
            decoded_both=len(found) / len(corner_px),
            corner_px_vs_fp32_mean=float(np.mean(found)) if found else float("nan"),
            corner_px_vs_fp32_max=float(np.max(found)) if found else float("nan"),
        )
    return out


def _corner_distance(fp32_heads: np.ndarray, int8_heads: np.ndarray) -> float:
    """Mean distance between the two outputs' decoded corners (inf when either decodes to nothing)."""
    a, b = decode(fp32_heads), decode(int8_heads)
    if a is None or b is None:
        return float("inf")
    return float(np.linalg.norm(a.corners - b.corners, axis=-1).mean())


def add_int8_variant(
    models_dir: Path,
    name: str,
    calibration: Sequence[np.ndarray],
    check: Sequence[np.ndarray],
    calibration_data: str,
) -> ModelVariant:
    """Quantize manifest model `name`, measure it against fp32 on `check`, record it under variants['int8']."""
    manifest = load_manifest(models_dir)
    entry = manifest.by_name()[name]
    fp32_path = Path(models_dir) / entry.file
    int8_path = int8_path_for(fp32_path)
    quantize_int8(fp32_path, int8_path, calibration, entry.input_name)
    agreement = measure_agreement(entry, fp32_path, int8_path, check or calibration)
    if not check:
        agreement["note"] = "no held-out images: measured on the calibration images"
    variant = ModelVariant(
        precision="int8",
        file=str(int8_path.relative_to(models_dir)),
        sha256=sha256_file(int8_path),
        method=METHOD,
        calibration_data=calibration_data,
        agreement=agreement,
    )
    entry.variants["int8"] = variant
    save_manifest(manifest, models_dir)
    log.info("%s int8: %s (%.1f MB)", name, agreement, int8_path.stat().st_size / 1e6)
    return variant


def _unet_input(image: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    x, _ = preprocess_image(image, hw)
    return x[np.newaxis, ..., np.newaxis]


def aasce_inputs(data_dir: Path, entry: ModelEntry, n_calibration: int, n_check: int | None) -> tuple[list, list, str]:
    """Calibration from the training split, check on the validation split (the split the model was trained with)."""
    from training.datasets import read_aasce_dataset
    from training.splits import SPLIT_SEED, aasce_sample_split

    samples = read_aasce_dataset(data_dir)
    train_idx, val_idx = aasce_sample_split(samples)
    hw = (int(entry.input_shape[1]), int(entry.input_shape[2]))  # type: ignore[arg-type]
    rng = np.random.default_rng(SPLIT_SEED)
    chosen = sorted(rng.choice(train_idx, size=min(n_calibration, len(train_idx)), replace=False))
    check_idx = val_idx[:n_check] if n_check else val_idx
    if entry.kind in ("segmentation", "landmarks"):  # both read the letterboxed film
        calibration = [_unet_input(samples[i].image(), hw) for i in chosen]
        check = [_unet_input(samples[i].image(), hw) for i in check_idx]
    else:  # the classifier sees ground-truth vertebra masks in the U-Net frame
        from spine_core.preprocessing import letterbox_mask

        def masks(idx: Sequence[int]) -> list[np.ndarray]:
            out = []
            for i in idx:
                s = samples[i]
                img = s.image()
                frame = letterbox_mask(s.vertebra_mask(img.shape[0], img.shape[1]))
                out.append(mask_to_classifier_input(frame, hw)[np.newaxis, ..., np.newaxis])
            return out

        calibration, check = masks(chosen), masks(check_idx)
    what = f"{len(calibration)} images of the AASCE training split (seeded choice); agreement on {len(check)} validation images"
    return calibration, check, what


def course_inputs(data_dir: Path, entry: ModelEntry, holdout_study: str | None) -> tuple[list, list, str]:
    """Calibration on the model's view of every study but the held-out one; check on the held-out study."""
    from training.datasets import read_course_dataset

    samples = [s for s in read_course_dataset(data_dir) if s.view == entry.view]
    if not samples:
        raise ValueError(f"no {entry.view} images in {data_dir}")
    hw = (int(entry.input_shape[1]), int(entry.input_shape[2]))  # type: ignore[arg-type]
    calibration = [_unet_input(s.image(), hw) for s in samples if s.study != holdout_study]
    check = [_unet_input(s.image(), hw) for s in samples if s.study == holdout_study]
    if not calibration:
        raise ValueError(f"every {entry.view} image belongs to the held-out study {holdout_study!r}")
    studies = sorted({s.study for s in samples if s.study != holdout_study})
    what = f"the {entry.view} image(s) of course studies {', '.join(studies)}"
    what += f"; agreement on held-out study {holdout_study}" if check else ""
    return calibration, check, what
