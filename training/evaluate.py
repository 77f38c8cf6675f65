"""`spine-evaluate`: score the exported ONNX models on a dataset through the analysis core's front door.

spine-evaluate aasce DATA_DIR --models exported_models --json OUT.json [--subset all|val|train]
spine-evaluate course DATA_DIR --models exported_models --json OUT.json
spine-evaluate course DATA_DIR --models M --structure S --heldout-of RUN_DIR --json OUT.json   (the run's held-out studies)

AASCE films go through `spine_engine.study.analyze_study` and `spine_engine.answers.classify_response`, the
front door and answer of `POST /classify`, so the figures describe what is served.
Dice is computed at the ORIGINAL image size. No TensorFlow is imported.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from spine_core.landmark_metrics import corner_error_px, fill_vertebrae, level_offsets, vertebra_heights
from spine_core.preprocessing import letterbox_mask
from spine_core.structures import CLASSES
from spine_engine import AGGREGATIONS, ModelRegistry, NoSpineFoundError, Segmenter
from spine_engine.answers import classify_response
from spine_engine.engine import Engine
from spine_engine.policy import AnalysisPolicy
from spine_engine.settings import EngineSettings
from spine_engine.study import Film, StudyRequest, analyze_study
from training.datasets import read_aasce_dataset, read_course_dataset
from training.evaluate_figures import classification_figures, dice_summary, measurement_figures, rule_figures
from training.metrics import dice
from training.splits import COBB_THRESHOLD_DEG, aasce_sample_split, split_description

log = logging.getLogger("spine-evaluate")


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


def evaluate_aasce(
    data_dir: Path,
    models_dir: Path,
    subset: str = "all",
    cobb_threshold: float = COBB_THRESHOLD_DEG,
    limit: int | None = None,
    threads: int | None = None,
    precision: str = "fp32",
    refinement: bool = False,
    policy: AnalysisPolicy | None = None,
) -> dict:
    """Every film sent through what `POST /classify` runs (`policy`: the settings', as the endpoint's)."""
    policy = policy or EngineSettings().policy()
    samples = read_aasce_dataset(data_dir)
    if subset != "all":
        train_idx, val_idx = aasce_sample_split(samples)
        samples = [samples[i] for i in (val_idx if subset == "val" else train_idx)]
    samples = samples[:limit] if limit else samples
    registry = _registry(models_dir, threads, precision, refinement)
    engine = Engine(registry, policy)
    has_classifier = registry.classifier() is not None
    refined = 0
    dices, labels, p_served, p_gt, rows, scored, truths = [], [], [], [], [], [], []
    p_classifier: list[float] = []
    served_thresholds: set[float] = set()
    refused: list[dict] = []
    t0 = time.perf_counter()
    for sample in tqdm(samples, desc="aasce", mininterval=5.0):
        film = Film(sample.image_path.read_bytes(), sample.name, "AP")
        request = StudyRequest(films=(film,), policy=policy, source_masks=False)  # what a label-only client sends
        refusal = None
        try:
            study = analyze_study(engine, request) if has_classifier else None
        except NoSpineFoundError as exc:  # no label for this film; its masks still count in the Dice figures
            refusal = str(exc)
            refused.append({"image": sample.name, "reason": refusal})
            study = None
        if study is None:  # segmentation figures only (no classifier, or a refused film)
            masks_only = replace(request, policy=replace(policy, spine_check=False), classify=False, source_masks=True)
            study = analyze_study(engine, replace(masks_only, max_pixels=10**9))
        ap = study.views["AP"]
        height, width = ap.image.height, ap.image.width
        truth_corners = sample.corners(height, width)
        truth = fill_vertebrae(truth_corners, height, width)
        mask = ap.result.masks["Ap_Vertebra"]
        d = dice(mask, truth)
        dices.append(d)
        refined += bool(ap.result.refined)
        cobb, found = ap.reading.cobb, ap.reading.vertebrae
        row: dict = {
            "image": sample.name,
            "dice": d,
            "max_cobb": sample.max_cobb,
            "models": ap.result.models_used,
            "true_angles": sample.cobb_angles.tolist(),
            "predicted_angles": cobb.aasce_angles_deg if cobb else None,
            "reliable": cobb.reliable if cobb else None,
            "vertebrae_found": len(found.vertebrae) if found else 0,
        }
        if cobb is not None and found is not None:
            corners = found.corners()
            row["corner_error_px"] = corner_error_px(corners, truth_corners)
            row["corner_error_heights"] = row["corner_error_px"] / float(vertebra_heights(truth_corners).mean())
            row["level_offsets"] = level_offsets(corners, truth_corners).tolist()
            row["dice_corners"] = dice(fill_vertebrae(corners, height, width), truth)
        truths.append(truth_corners)
        if refusal is not None:
            row["refused"] = refusal
        elif has_classifier:
            response = classify_response(engine, study, include_masks=False)  # the body a client gets
            frame = ap.result.model_frame_masks["Ap_Vertebra"]
            raw_gt = engine.segmenter.classify_masks({"ground_truth": letterbox_mask(truth, frame.shape)})["ground_truth"][1]
            p_served.append(response.p_damaged)
            served_thresholds.add(response.threshold)
            p_classifier.append(response.rules["mean"].p_damaged)  # the classifier's own, whichever rule decides
            p_gt.append(raw_gt)
            labels.append(sample.max_cobb >= cobb_threshold)
            scored.append(response.label == CLASSES[1])
            row.update(
                damaged=labels[-1],
                label=response.label,
                p_damaged=response.p_damaged,
                p_damaged_classifier=p_classifier[-1],
                p_damaged_raw=study.per_mask_raw["Ap_Vertebra"][1],
                p_damaged_gt_mask_raw=raw_gt,
                decided_by=response.decided_by,
                rules={name: r.label for name, r in response.rules.items()},
            )
        rows.append(row)
    out: dict = {
        "dataset": "aasce",
        "data_dir": str(data_dir),
        "subset": subset,
        "split": None if subset == "all" else split_description(),
        "n_images": len(samples),
        "models_dir": str(models_dir),
        "execution_provider": registry.execution_provider,
        "precision": _precisions(registry),
        "policy": vars(policy),
        "seconds": round(time.perf_counter() - t0, 1),
        "refinement": _refinement(registry, "Ap_Vertebra", refined),
        "refused": {"n": len(refused), "films": refused},
        "segmentation": {"Ap_Vertebra": dice_summary(dices)},
    }
    measurement = measurement_figures(rows, truths)
    if "dice_corners_filled" in measurement:  # masks filled from the predicted corners, films with all 17 found
        out["segmentation"]["Ap_Vertebra_from_corners"] = measurement.pop("dice_corners_filled")
    out.update(measurement)
    if has_classifier and labels:
        out["classification"] = {
            # the deciding rule's cut-off: 0.5 for the measured rule, the manifest's for the classifier's
            **classification_figures(labels, p_served, scored, min(served_thresholds)),
            "decision_thresholds": sorted(served_thresholds),
            "what": "the label and p_damaged that POST /classify returns with default settings",
            "threshold_deg": cobb_threshold,
            "rules": rule_figures(rows),
            "masks": "predicted by the exported Ap_Vertebra U-Net",
            "classifier_mean_rule": classification_figures(
                labels, p_classifier, [r["rules"]["mean"] == CLASSES[1] for r in rows if "rules" in r], engine.rules.threshold
            ),
            "ground_truth_masks_raw": classification_figures(labels, p_gt),
        }
    out["per_image"] = rows
    return out


def evaluate_course(
    data_dir: Path,
    models_dir: Path,
    threads: int | None = None,
    precision: str = "fp32",
    refinement: bool = False,
    structure: str | None = None,
    heldout_of: Path | None = None,
) -> dict:
    """Dice at the original size of every mask present (or of `structure` only); `heldout_of`: a `spine-train unet
    --data` run, whose held-out studies alone are scored (the figure the promotion rule reads)."""
    samples = read_course_dataset(data_dir)
    heldout = None
    if heldout_of is not None:
        info = json.loads((heldout_of / "run_info.json").read_text())
        heldout = {"run": str(heldout_of), "structure": info["structure"], "studies": info.get("heldout_studies") or []}
        if structure not in (None, info["structure"]):
            raise SystemExit(f"--structure {structure} but the run {heldout_of} trained {info['structure']}")
        structure = info["structure"]
        samples = [s for s in samples if s.study in set(heldout["studies"])]
    if structure is not None:
        samples = [s for s in samples if structure in s.mask_paths]
        for s in samples:
            s.mask_paths = {structure: s.mask_paths[structure]}
    registry = _registry(models_dir, threads, precision, refinement)
    has_classifier = registry.classifier() is not None
    dices: dict[str, list[float]] = {}
    studies: dict[str, dict] = {}
    rows: list[dict] = []
    t0 = time.perf_counter()
    for sample in tqdm(samples, desc="course", mininterval=5.0):
        structures = [s for s in sample.mask_paths if registry.segmentation_model(s) is not None]
        if not structures:
            continue
        result = Segmenter(registry).segment(sample.image(), sample.view, structures)
        study = studies.setdefault(sample.study, {"label": sample.label, "frame_masks": {}})
        for s in structures:
            dices.setdefault(s, []).append(dice(result.masks[s], sample.mask(s)))
            study["frame_masks"][s] = result.model_frame_masks[s]
            rows.append({"study": sample.study, "view": sample.view, "structure": s, "dice": dices[s][-1]})
    out: dict = {
        "dataset": "course",
        "data_dir": str(data_dir),
        "n_images": len(samples),
        "n_studies": len(studies),
        "execution_provider": registry.execution_provider,
        "precision": _precisions(registry),
        "segmentation": {s: dice_summary(v) for s, v in sorted(dices.items())},
        "models": {
            s: {"sha256": m.sha256, "validated": m.entry.validated} for s in dices if (m := registry.segmentation_model(s))
        },
        "per_image": rows,
    }
    if heldout is not None:
        scored = {r["study"] for r in rows}
        out["heldout"] = {**heldout, "n_studies": len(scored), "dice": [r["dice"] for r in rows]}
    if has_classifier and studies:
        per_study = []
        hits = {rule: [] for rule in AGGREGATIONS}
        for name, study in studies.items():
            per_mask = Segmenter(registry).classify_masks(study["frame_masks"])
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
    parser.add_argument(
        "--measurement", choices=["landmarks", "mask"], default=None, help="as SPINE_MEASUREMENT (default: the endpoint's)"
    )
    parser.add_argument(
        "--vertebra-mask", choices=["auto", "unet", "corners"], default=None, help="as SPINE_VERTEBRA_MASK (default: auto)"
    )
    parser.add_argument("--structure", default=None, help="course: score this structure's masks only")
    parser.add_argument(
        "--heldout-of",
        type=Path,
        default=None,
        help="course: score only the held-out studies of this `spine-train unet --data` run",
    )
    args = parser.parse_args(argv)
    overrides = {k: v for k, v in (("measurement", args.measurement), ("vertebra_mask", args.vertebra_mask)) if v}
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
            replace(EngineSettings().policy(), **overrides),
        )
    else:
        result = evaluate_course(
            args.data_dir, args.models, args.threads, args.precision, args.refinement, args.structure, args.heldout_of
        )
    text = json.dumps(result, indent=1)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    summary = {k: v for k, v in result.items() if k not in ("per_image",)}
    if "heldout" in summary:
        summary["heldout"] = {k: v for k, v in summary["heldout"].items() if k != "dice"}
    if "classification" in summary and "per_study" in summary["classification"]:
        summary["classification"] = {k: v for k, v in summary["classification"].items() if k != "per_study"}
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
