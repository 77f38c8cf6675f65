"""The figures `spine-evaluate` reports (training/evaluate.py): Dice summaries, and the AASCE films' classification,
per-rule and Cobb / landmark measurement figures, aggregated from the per-film rows."""

from __future__ import annotations

import numpy as np

from spine_core.landmark_metrics import mae_deg, smape_pct
from spine_core.structures import CLASSES
from spine_engine.aggregation import DAMAGED_CUTOFF
from training.metrics import accuracy, roc_auc, sensitivity, specificity


def dice_summary(values: list[float]) -> dict[str, float]:
    """Mean, median, 10th percentile and minimum of per-mask Dice (mean and median NaN when there are none)."""
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


def classification_figures(
    labels: list[bool], p_damaged: list[float], flagged: list[bool] | None = None, cutoff: float = DAMAGED_CUTOFF
) -> dict:
    """AUC of p_damaged, and accuracy, sensitivity (Damaged films flagged) and specificity of the flags
    (`flagged`: the labels returned; default p_damaged >= cutoff)."""
    y, p = np.asarray(labels, bool), np.asarray(p_damaged, dtype=np.float64)
    f = np.asarray(flagged, bool) if flagged is not None else p >= cutoff
    return {
        "auc": roc_auc(y, p),
        "accuracy": accuracy(y, f),
        "sensitivity": sensitivity(y, f),
        "specificity": specificity(y, f),
        "decision_threshold": cutoff,
        "n": len(y),
        "n_damaged": int(y.sum()),
    }


def rule_figures(rows: list[dict]) -> dict:
    """Accuracy, sensitivity and specificity of every rule the endpoint reports, on the films where it gave one."""
    out = {}
    for rule in sorted({r for row in rows for r in row.get("rules", {})}):
        pairs = [(row["damaged"], row["rules"][rule] == CLASSES[1]) for row in rows if rule in row.get("rules", {})]
        y, f = np.asarray([p[0] for p in pairs], bool), np.asarray([p[1] for p in pairs], bool)
        out[rule] = {
            "accuracy": accuracy(y, f),
            "sensitivity": sensitivity(y, f),
            "specificity": specificity(y, f),
            "n": len(pairs),
        }
    return out


def measurement_figures(rows: list[dict], truths: list[np.ndarray]) -> dict:
    """`cobb` and `landmarks`: the films the endpoint measured, against the labels (angles.csv order), and the
    Dice of masks filled from the predicted corners (beside the U-Net's, in `segmentation`)."""
    measured = [(row, t) for row, t in zip(rows, truths, strict=True) if row.get("predicted_angles") is not None]
    cobb: dict = {"films": len(rows), "films_measured": len(measured)}
    if not measured:
        return {"cobb": cobb}
    predicted = np.array([row["predicted_angles"] for row, _ in measured])
    true = np.array([row["true_angles"] for row, _ in measured])
    reliable = np.array([row.get("reliable") is not False for row, _ in measured])
    errors = np.abs(predicted.max(axis=1) - true.max(axis=1))
    # A film without an answer counts as a 100 % error (the rule): SMAPE over every film.
    per_film = [
        smape_pct(np.array(row["predicted_angles"]), np.array(row["true_angles"])) for row in rows if row.get("predicted_angles")
    ]
    offsets = np.array([row["level_offsets"] for row, _ in measured])
    cobb.update(
        films_reliable=int(reliable.sum()),
        smape_all_films_pct=float((sum(per_film) + 100.0 * (len(rows) - len(per_film))) / len(rows)),
        smape_pct=smape_pct(predicted, true),
        mae_deg=mae_deg(predicted, true),
        max_angle_mae_deg=float(errors.mean()),
        max_angle_mae_deg_reliable=float(errors[reliable].mean()) if reliable.any() else float("nan"),
        angle_order="as angles.csv",
    )
    return {
        "cobb": cobb,
        "landmarks": {
            "mean_error_px": float(np.mean([row["corner_error_px"] for row, _ in measured])),
            "mean_error_vertebra_heights": float(np.mean([row["corner_error_heights"] for row, _ in measured])),
            "level_accuracy": float((offsets == 0).mean()),
            "t1_right": float((offsets[:, 0] == 0).mean()),
            "l5_right": float((offsets[:, -1] == 0).mean()),
        },
        "dice_corners_filled": dice_summary([row["dice_corners"] for row, _ in measured]),
    }
