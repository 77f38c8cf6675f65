"""Calibrate the mask classifier's p_damaged and choose its decision threshold on the validation split.

python -m training.calibrate EVAL_JSON_OR_DATA_DIR --out calibration.json
    [--method platt|temperature] [--rule screening|youden|accuracy] [--min-sensitivity 0.90] [--folds 5] [--repeats 20]
    [--figure docs/calibration.png] [--write-manifest exported_models]

EVAL_JSON: the output of `spine-evaluate aasce DATA --subset val --json EVAL_JSON` (its per-image raw
p_damaged, from the service's own code). A DATA_DIR (aasce-train) runs that evaluation first.

- Calibration map: Platt scaling (default) or temperature scaling of logit(p_damaged), fitted by
  maximum likelihood (Newton's method) on all films given.
- Threshold rule (a screening tool: a missed severe curve costs more than a second look at a moderate
  one): the highest specificity whose sensitivity is at least --min-sensitivity; ties go to the higher
  sensitivity; the cut-off sits halfway (in logit) between the two neighbouring films' scores.
- Honest figures: in-sample, and patient-grouped K-fold cross-validation within the same films (map
  and threshold fitted on K-1 folds, scored on the held-out fold; pooled over folds, mean over repeats).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spine_core import calibration as cal
from spine_core.manifest import Calibration, load_manifest
from training.cli import COBB_THRESHOLD_DEG
from training.datasets import patient_key
from training.metrics import accuracy, roc_auc, sensitivity, specificity

log = logging.getLogger("spine-calibrate")

CLASSIFIER = "Mask_Classifier"


@dataclass
class Films:
    names: list[str]
    p_damaged: np.ndarray  # raw softmax output of the classifier
    damaged: np.ndarray  # bool: largest Cobb angle >= the threshold
    patients: list[str]
    source: str


def films_from_evaluation(result: dict, source: str) -> Films:
    """The per-image records of a `spine-evaluate aasce` result (`source` names it in errors)."""
    rows = [r for r in result["per_image"] if "p_damaged" in r]
    if not rows:
        raise ValueError(f"{source}: no per-image p_damaged (was the classifier loaded?)")
    cobb = float(result.get("classification", {}).get("threshold_deg", COBB_THRESHOLD_DEG))
    return Films(
        names=[r["image"] for r in rows],
        # The classifier's own output: `p_damaged_raw` where spine-evaluate also records the served, calibrated p_damaged.
        p_damaged=np.array([r.get("p_damaged_raw", r["p_damaged"]) for r in rows], dtype=np.float64),
        damaged=np.array([r["max_cobb"] >= cobb for r in rows], dtype=bool),
        patients=[patient_key(r["image"]) for r in rows],
        source=(
            f"spine-evaluate {result.get('dataset', '')} {result.get('subset', 'all')} subset "
            f"({result.get('split') or 'no split'}), masks {result.get('classification', {}).get('masks', 'as evaluated')}"
        ),
    )


def load_films(path: Path, models_dir: Path) -> Films:
    if path.is_dir():
        from training.evaluate import evaluate_aasce

        return films_from_evaluation(evaluate_aasce(path, models_dir, subset="val"), str(path))
    return films_from_evaluation(json.loads(path.read_text()), str(path))


# --- fitting -----------------------------------------------------------------------------------------


def fit_logistic(z: np.ndarray, y: np.ndarray, intercept: bool, iterations: int = 100) -> tuple[float, float]:
    """Maximum-likelihood (slope, intercept) of P(y) = sigmoid(slope * z + intercept); Newton with step halving."""
    z = np.asarray(z, np.float64)
    y = np.asarray(y, np.float64)
    x = np.stack([z, np.ones_like(z)], axis=1) if intercept else z[:, None]
    w = np.zeros(x.shape[1])
    w[0] = 1.0

    def nll(weights: np.ndarray) -> float:
        s = x @ weights
        return float(np.mean(np.logaddexp(0.0, s) - y * s))

    current = nll(w)
    for _ in range(iterations):
        p = cal.sigmoid(x @ w)
        gradient = x.T @ (p - y) / len(y)
        hessian = (x.T * (p * (1 - p))) @ x / len(y) + 1e-9 * np.eye(x.shape[1])
        step = np.linalg.solve(hessian, gradient)
        scale = 1.0
        while scale > 1e-6 and nll(w - scale * step) > current:
            scale /= 2
        w_next = w - scale * step
        value = nll(w_next)
        done = abs(current - value) < 1e-12
        w, current = w_next, min(value, current)
        if done:
            break
    return float(w[0]), float(w[1]) if intercept else 0.0


def fit_calibration(p_damaged: np.ndarray, y: np.ndarray, method: str) -> dict[str, float | str]:
    """The calibration mapping (the manifest's keys) fitted on these films."""
    z = cal.logit(p_damaged)
    if method == "temperature":
        slope, _ = fit_logistic(z, y, intercept=False)
        if slope <= 0:
            raise ValueError("the scores rank Damaged below Normal: temperature scaling cannot fit them")
        return {"method": "temperature", "temperature": 1.0 / slope}
    if method == "platt":
        slope, intercept = fit_logistic(z, y, intercept=True)
        return {"method": "platt", "slope": slope, "intercept": intercept}
    raise ValueError(f"unknown method {method!r}; expected one of {cal.METHODS}")


RULES = ("screening", "youden", "accuracy")


def _rule_key(rule: str, sens: float, spec: float, acc: float, min_sensitivity: float) -> tuple[float, ...] | None:
    """What a rule maximises at one cut-off (None: not allowed); ties go to the higher sensitivity."""
    if rule == "screening":
        return (spec, sens) if sens >= min_sensitivity else None
    if rule == "youden":
        return (sens + spec - 1, sens)
    if rule == "accuracy":
        return (acc, sens)
    raise ValueError(f"unknown rule {rule!r}; expected one of {RULES}")


def threshold_by_rule(scores: np.ndarray, y: np.ndarray, rule: str = "screening", min_sensitivity: float = 0.90) -> float:
    """Cut-off on `scores` (Damaged when score >= cut-off) that maximises the rule, halfway between
    neighbouring distinct scores. screening: the highest specificity with sensitivity >= min_sensitivity;
    youden: sensitivity + specificity - 1; accuracy: the share right."""
    scores = np.asarray(scores, np.float64)
    y = np.asarray(y, bool)
    distinct = np.unique(scores)
    candidates = np.concatenate([[distinct[0] - 1.0], (distinct[1:] + distinct[:-1]) / 2, [distinct[-1] + 1.0]])
    best: tuple[float, ...] | None = None
    chosen = candidates[0]  # flags everything: sensitivity 1
    for t in candidates:
        flagged = scores >= t
        key = _rule_key(rule, sensitivity(y, flagged), specificity(y, flagged), accuracy(y, flagged), min_sensitivity)
        if key is not None and (best is None or key > best):
            best, chosen = key, t
    return float(chosen)


def choose_threshold(
    p_damaged: np.ndarray, y: np.ndarray, mapping: dict, rule: str = "screening", min_sensitivity: float = 0.90
) -> float:
    """The rule applied in logit space (where neighbouring saturated scores are still apart), returned as a
    threshold on the calibrated p_damaged."""
    t_logit = threshold_by_rule(cal.logit(p_damaged), y, rule, min_sensitivity)
    return float(cal.calibrate_p_damaged(cal.sigmoid(t_logit), mapping))


def scores_at(p_calibrated: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, float]:
    flagged = np.asarray(p_calibrated) >= threshold
    return {
        "accuracy": accuracy(y, flagged),
        "sensitivity": sensitivity(y, flagged),
        "specificity": specificity(y, flagged),
        "auc": roc_auc(y, p_calibrated),
    }


def calibration_scores(p: np.ndarray, y: np.ndarray, n_bins: int = cal.DEFAULT_BINS) -> dict[str, float]:
    return {
        "ece_top_label": cal.expected_calibration_error(p, y, n_bins, "top_label"),
        "ece_p_damaged": cal.expected_calibration_error(p, y, n_bins, "positive"),
        "nll": cal.negative_log_likelihood(p, y),
        "brier": cal.brier_score(p, y),
    }


# --- cross-validation -----------------------------------------------------------------------------------


def grouped_folds(groups: Sequence[str], k: int, seed: int) -> list[np.ndarray]:
    """K folds of indices, no patient in two folds: patients shuffled, each to the fold with fewest images."""
    rng = np.random.default_rng(seed)
    unique = sorted(set(groups))
    rng.shuffle(unique)
    members: dict[str, list[int]] = {g: [] for g in unique}
    for i, g in enumerate(groups):
        members[g].append(i)
    folds: list[list[int]] = [[] for _ in range(k)]
    for g in unique:
        min(folds, key=len).extend(members[g])
    return [np.array(sorted(f), dtype=int) for f in folds]


def cross_validate(films: Films, method: str, rule: str, min_sensitivity: float, k: int, repeats: int) -> dict:
    """Out-of-fold calibrated p_damaged and labels, pooled per repeat; mean and spread over repeats."""
    per_repeat: list[dict[str, float]] = []
    for seed in range(repeats):
        p_oof = np.empty(len(films.names))
        flagged = np.empty(len(films.names), dtype=bool)
        for held_out in grouped_folds(films.patients, k, seed):
            fit = np.setdiff1d(np.arange(len(films.names)), held_out)
            mapping = fit_calibration(films.p_damaged[fit], films.damaged[fit], method)
            threshold = choose_threshold(films.p_damaged[fit], films.damaged[fit], mapping, rule, min_sensitivity)
            p_oof[held_out] = cal.calibrate_p_damaged(films.p_damaged[held_out], mapping)
            flagged[held_out] = p_oof[held_out] >= threshold
        y = films.damaged
        per_repeat.append(
            {
                "accuracy": accuracy(y, flagged),
                "sensitivity": sensitivity(y, flagged),
                "specificity": specificity(y, flagged),
                "auc": roc_auc(y, p_oof),
                **calibration_scores(p_oof, y),
            }
        )
    keys = per_repeat[0].keys()
    return {
        "folds": k,
        "repeats": repeats,
        "grouping": "patient",
        "mean": {key: float(np.mean([r[key] for r in per_repeat])) for key in keys},
        "sd": {key: float(np.std([r[key] for r in per_repeat])) for key in keys},
        "min": {key: float(np.min([r[key] for r in per_repeat])) for key in keys},
    }


# --- the whole run ----------------------------------------------------------------------------------------


def threshold_rule(rule: str, min_sensitivity: float) -> str:
    what = {
        "screening": f"highest specificity with sensitivity >= {min_sensitivity:.2f}",
        "youden": "highest sensitivity + specificity - 1 (Youden's J)",
        "accuracy": "highest accuracy",
    }[rule]
    return f"{what} on the calibration films (ties: higher sensitivity), halfway in logit between neighbouring films"


def _rule_figures(films: Films, mapping: dict, method: str, rule: str, min_sensitivity: float, folds: int, repeats: int) -> dict:
    """Another cut-off rule with the same map: its threshold, in-sample and cross-validated figures."""
    threshold = choose_threshold(films.p_damaged, films.damaged, mapping, rule, min_sensitivity)
    return {
        "threshold": threshold,
        "in_sample": scores_at(cal.calibrate_p_damaged(films.p_damaged, mapping), films.damaged, threshold),
        "cross_validated": cross_validate(films, method, rule, min_sensitivity, folds, repeats)["mean"],
    }


def calibrate(
    films: Films,
    method: str = "platt",
    rule: str = "screening",
    min_sensitivity: float = 0.90,
    folds: int = 5,
    repeats: int = 20,
) -> dict:
    y = films.damaged
    mapping = fit_calibration(films.p_damaged, y, method)
    p_after = cal.calibrate_p_damaged(films.p_damaged, mapping)
    threshold = choose_threshold(films.p_damaged, y, mapping, rule, min_sensitivity)
    before, after = calibration_scores(films.p_damaged, y), calibration_scores(p_after, y)
    other_method = "platt" if method == "temperature" else "temperature"
    return {
        "calibration": mapping,
        "decision_threshold": threshold,
        "threshold_rule": threshold_rule(rule, min_sensitivity),
        "fitted_on": f"{len(y)} films ({int(y.sum())} Damaged) of {films.source}",
        "logit_clip": cal.EPS,
        "clipped": {
            "at_1": int(np.sum(films.p_damaged >= 1 - cal.EPS)),
            "at_0": int(np.sum(films.p_damaged <= cal.EPS)),
        },
        "ece_bins": cal.DEFAULT_BINS,
        "in_sample": {
            "before": {**before, **scores_at(films.p_damaged, y, 0.5)},
            "after": {**after, **scores_at(p_after, y, threshold)},
            "raw_auc_unclipped": roc_auc(y, films.p_damaged),
        },
        "cross_validated": cross_validate(films, method, rule, min_sensitivity, folds, repeats),
        "alternative": {
            "method": other_method,
            "in_sample": calibration_scores(
                cal.calibrate_p_damaged(films.p_damaged, fit_calibration(films.p_damaged, y, other_method)), y
            ),
            "cross_validated": cross_validate(films, other_method, rule, min_sensitivity, folds, repeats)["mean"],
        },
        "other_rules": {
            other: _rule_figures(films, mapping, method, other, min_sensitivity, folds, repeats)
            for other in RULES
            if other != rule
        },
        "films": [
            {"image": n, "damaged": bool(d), "p_damaged_raw": float(p), "p_damaged_calibrated": float(q)}
            for n, d, p, q in zip(films.names, y, films.p_damaged, p_after, strict=True)
        ],
    }


def manifest_calibration(result: dict) -> Calibration:
    before, after = result["in_sample"]["before"], result["in_sample"]["after"]
    return Calibration(
        **result["calibration"],
        logit_clip=result["logit_clip"],
        fitted_on=result["fitted_on"],
        threshold_rule=result["threshold_rule"],
        ece_bins=result["ece_bins"],
        ece_before=before["ece_top_label"],
        ece_after=after["ece_top_label"],
        nll_before=before["nll"],
        nll_after=after["nll"],
        metrics={
            "ece": "top-label (the returned score); ece_p_damaged bins p_damaged itself",
            "in_sample_at_threshold": {k: after[k] for k in ("accuracy", "sensitivity", "specificity", "auc")},
            "in_sample_ece_p_damaged_before": before["ece_p_damaged"],
            "in_sample_ece_p_damaged_after": after["ece_p_damaged"],
            "cross_validated": result["cross_validated"]["mean"],
            "cross_validation": (
                f"{result['cross_validated']['folds']}-fold, patient-grouped, map and threshold refitted per fold, "
                f"mean of {result['cross_validated']['repeats']} repeats"
            ),
        },
    )


def write_to_manifest(models_dir: Path, result: dict) -> Path:
    """Set the classifier entry's `calibration` and `decision_threshold`; every other byte of the manifest
    stays as it was (fields the file does not hold are not written, so other entries gain no nulls)."""
    manifest = load_manifest(models_dir)
    models = [
        m.model_copy(update={"calibration": manifest_calibration(result), "decision_threshold": result["decision_threshold"]})
        if m.name == CLASSIFIER
        else m
        for m in manifest.models
    ]
    if not any(m.name == CLASSIFIER for m in manifest.models):
        raise ValueError(f"{models_dir}: the manifest has no {CLASSIFIER} entry")
    updated = manifest.model_copy(update={"models": models})
    path = Path(models_dir) / "manifest.json"
    path.write_text(updated.model_dump_json(indent=2, exclude_unset=True) + "\n")
    load_manifest(models_dir)  # still validates
    return path


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    parser = argparse.ArgumentParser(
        prog="python -m training.calibrate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, help="spine-evaluate --json output, or the aasce-train folder")
    parser.add_argument("--models", type=Path, default=Path(__file__).resolve().parent.parent / "exported_models")
    parser.add_argument("--out", type=Path, required=True, help="write the full result (JSON) here")
    parser.add_argument("--method", choices=cal.METHODS, default="platt")
    parser.add_argument("--rule", choices=RULES, default="screening", help="how the decision threshold is chosen")
    parser.add_argument("--min-sensitivity", type=float, default=0.90)
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--figure", type=Path, default=None, help="write the reliability diagram (PNG) here")
    parser.add_argument(
        "--write-manifest",
        type=Path,
        default=None,
        metavar="MODELS_DIR",
        help="store calibration and decision_threshold in MODELS_DIR/manifest.json's classifier entry",
    )
    args = parser.parse_args(argv)
    films = load_films(args.source, args.models)
    result = calibrate(films, args.method, args.rule, args.min_sensitivity, args.folds, args.repeats)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.figure:
        from training.calibration_figure import write_figure

        log.info("figure: %s", write_figure(films.p_damaged, films.damaged, result, args.figure))
    if args.write_manifest:
        log.info("manifest: %s", write_to_manifest(args.write_manifest, result))
    print(json.dumps({k: v for k, v in result.items() if k != "films"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
