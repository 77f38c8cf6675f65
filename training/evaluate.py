"""`spine-evaluate`: score the exported ONNX models on a dataset through the service's own code path.

spine-evaluate aasce DATA_DIR --models exported_models --json OUT.json [--subset all|val|train]
spine-evaluate course DATA_DIR --models exported_models --json OUT.json

Images go through `service.inference.ModelRegistry` (the same preprocessing, onnxruntime sessions
and post-processing as `POST /segment` and `/classify`), so the figures describe what is served.
Dice is computed at the ORIGINAL image size. No TensorFlow is imported.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from service.inference import AGGREGATIONS, ModelRegistry
from service.inference.aggregation import DAMAGED_CUTOFF
from spine_core.preprocessing import letterbox_mask
from spine_core.structures import CLASSES
from training.datasets import read_aasce_dataset, read_course_dataset
from training.metrics import accuracy, dice, roc_auc, sensitivity, specificity
from training.splits import COBB_THRESHOLD_DEG, aasce_sample_split, split_description

log = logging.getLogger("spine-evaluate")


def _summary(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    if arr.size == 0:
        return {"dice_mean": float("nan"), "dice_median": float("nan"), "n": 0}
    return {
        "dice_mean": float(arr.mean()),
        "dice_median": float(np.median(arr)),
        "dice_p10": float(np.percentile(arr, 10)),
        "dice_min": float(arr.min()),
        "n": int(arr.size),
    }


def _registry(models_dir: Path, threads: int | None, precision: str = "fp32", refinement: bool = False) -> ModelRegistry:
    registry = ModelRegistry.load(
        models_dir,
        providers=["CPUExecutionProvider"],
        intra_op_threads=threads,
        warmup=False,
        precision=precision,
        use_refinement=refinement,
    )
    if registry.problems:
        log.warning("models not loaded: %s", registry.problems)
    return registry


def _precisions(registry: ModelRegistry) -> dict[str, str]:
    """What each model ran as (int8 requested: models without an int8 variant still run fp32)."""
    return {name: m.precision for name, m in registry.models.items()}


def _refinement(registry: ModelRegistry, structure: str, n_refined: int) -> dict:
    """Which stage the masks came from: the refinement model (on how many images) or the first stage only."""
    model = registry.refinement_model(structure)
    return {"model": model.name if model else None, "images_refined": n_refined}


def _classification(labels: list[bool], p_damaged: list[float]) -> dict[str, float]:
    """AUC, and at the served cut-off accuracy, sensitivity (Damaged films flagged) and specificity."""
    y, p = np.asarray(labels, bool), np.asarray(p_damaged)
    flagged = p >= DAMAGED_CUTOFF
    return {
        "auc": roc_auc(y, p),
        "accuracy": accuracy(y, flagged),
        "sensitivity": sensitivity(y, flagged),
        "specificity": specificity(y, flagged),
        "decision_threshold": DAMAGED_CUTOFF,
        "n": len(y),
        "n_damaged": int(y.sum()),
    }


def evaluate_aasce(
    data_dir: Path,
    models_dir: Path,
    subset: str = "all",
    cobb_threshold: float = COBB_THRESHOLD_DEG,
    limit: int | None = None,
    threads: int | None = None,
    precision: str = "fp32",
    refinement: bool = False,
) -> dict:
    samples = read_aasce_dataset(data_dir)
    if subset != "all":
        train_idx, val_idx = aasce_sample_split(samples)
        samples = [samples[i] for i in (val_idx if subset == "val" else train_idx)]
    samples = samples[:limit] if limit else samples
    registry = _registry(models_dir, threads, precision, refinement)
    has_classifier = registry.classifier() is not None
    refined = 0
    dices, labels, p_pred, p_gt, per_image = [], [], [], [], []
    t0 = time.perf_counter()
    for sample in tqdm(samples, desc="aasce", mininterval=5.0):
        image = sample.image()
        truth = sample.vertebra_mask(image.shape[0], image.shape[1])
        result = registry.segment(image, "AP", ["Ap_Vertebra"])
        d = dice(result.masks["Ap_Vertebra"], truth)
        dices.append(d)
        refined += bool(result.refined)
        row = {"image": sample.name, "dice": d, "max_cobb": sample.max_cobb, "models": result.models_used}
        if has_classifier:
            frame = result.model_frame_masks["Ap_Vertebra"]
            gt_frame = letterbox_mask(truth, frame.shape)
            scores = registry.classify_masks({"predicted": frame, "ground_truth": gt_frame})
            p_pred.append(scores["predicted"][1])
            p_gt.append(scores["ground_truth"][1])
            labels.append(sample.max_cobb >= cobb_threshold)
            row.update(p_damaged=scores["predicted"][1], p_damaged_gt_mask=scores["ground_truth"][1])
        per_image.append(row)
    out: dict = {
        "dataset": "aasce",
        "data_dir": str(data_dir),
        "subset": subset,
        "split": None if subset == "all" else split_description(),
        "n_images": len(samples),
        "models_dir": str(models_dir),
        "execution_provider": registry.execution_provider,
        "precision": _precisions(registry),
        "seconds": round(time.perf_counter() - t0, 1),
        "refinement": _refinement(registry, "Ap_Vertebra", refined),
        "segmentation": {"Ap_Vertebra": _summary(dices)},
    }
    if has_classifier:
        out["classification"] = {
            **_classification(labels, p_pred),
            "threshold_deg": cobb_threshold,
            "masks": "predicted by the exported Ap_Vertebra U-Net",
            "ground_truth_masks": _classification(labels, p_gt),
        }
    out["per_image"] = per_image
    return out


def evaluate_course(
    data_dir: Path, models_dir: Path, threads: int | None = None, precision: str = "fp32", refinement: bool = False
) -> dict:
    samples = read_course_dataset(data_dir)
    registry = _registry(models_dir, threads, precision, refinement)
    has_classifier = registry.classifier() is not None
    dices: dict[str, list[float]] = {}
    studies: dict[str, dict] = {}
    t0 = time.perf_counter()
    for sample in tqdm(samples, desc="course", mininterval=5.0):
        structures = [s for s in sample.mask_paths if registry.segmentation_model(s) is not None]
        if not structures:
            continue
        result = registry.segment(sample.image(), sample.view, structures)
        study = studies.setdefault(sample.study, {"label": sample.label, "frame_masks": {}})
        for s in structures:
            dices.setdefault(s, []).append(dice(result.masks[s], sample.mask(s)))
            study["frame_masks"][s] = result.model_frame_masks[s]
    out: dict = {
        "dataset": "course",
        "data_dir": str(data_dir),
        "n_images": len(samples),
        "n_studies": len(studies),
        "execution_provider": registry.execution_provider,
        "precision": _precisions(registry),
        "segmentation": {s: _summary(v) for s, v in sorted(dices.items())},
    }
    if has_classifier and studies:
        per_study = []
        hits = {rule: [] for rule in AGGREGATIONS}
        for name, study in studies.items():
            per_mask = registry.classify_masks(study["frame_masks"])
            row = {"study": name, "label": study["label"]}
            for rule, fn in AGGREGATIONS.items():
                predicted, score = fn(per_mask)
                row[rule] = {"label": predicted, "score": score}
                hits[rule].append(predicted == study["label"])
            per_study.append(row)
        out["classification"] = {
            "study_accuracy": {rule: float(np.mean(h)) for rule, h in hits.items()},
            "classes": list(CLASSES),
            "per_study": per_study,
        }
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(
        prog="spine-evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("layout", choices=["aasce", "course"])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--models", type=Path, default=Path(__file__).resolve().parent.parent / "exported_models")
    parser.add_argument("--json", type=Path, default=None, help="write the full results here")
    parser.add_argument(
        "--subset",
        choices=["all", "val", "train"],
        default="all",
        help="aasce: the patient-grouped split used in training (val = the honest figure on aasce-train)",
    )
    parser.add_argument("--cobb-threshold", type=float, default=COBB_THRESHOLD_DEG)
    parser.add_argument("--limit", type=int, default=None, help="first N images only")
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    parser.add_argument(
        "--precision", choices=["fp32", "int8"], default="fp32", help="int8: the models' quantized variants where listed"
    )
    parser.add_argument(
        "--refinement",
        action="store_true",
        help="serve masks from the manifest's refinement models where there are some (SPINE_REFINEMENT=true)",
    )
    args = parser.parse_args(argv)
    if args.layout == "aasce":
        result = evaluate_aasce(
            args.data_dir,
            args.models,
            args.subset,
            args.cobb_threshold,
            args.limit,
            args.threads,
            args.precision,
            args.refinement,
        )
    else:
        result = evaluate_course(args.data_dir, args.models, args.threads, args.precision, args.refinement)
    text = json.dumps(result, indent=1)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    summary = {k: v for k, v in result.items() if k not in ("per_image",)}
    if "classification" in summary and "per_study" in summary["classification"]:
        summary["classification"] = {k: v for k, v in summary["classification"].items() if k != "per_study"}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
