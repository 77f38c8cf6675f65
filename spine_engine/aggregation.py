"""Rules that turn per-mask (p_normal, p_damaged) scores, or the measured Cobb angle, into one label.

Each classifier rule returns `(label, score)` where `score` is the aggregated probability of `label`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from spine_core.structures import CLASSES, DAMAGED_COBB_DEG

# p_damaged at or above which a score means Damaged when the classifier's manifest entry names no
# `decision_threshold`; for one mask the `max_score` rule's cut-off too (its two softmax scores sum to 1).
DAMAGED_CUTOFF = 0.5

PerMask = Mapping[str, tuple[float, float]] | Iterable[tuple[float, float]]
Aggregation = Callable[..., tuple[str, float]]
CLASSIFIER_RULES = ("mean", "max_score")
# cobb: the measured angle when its main curve is reliable, else no label (422); measured: the measured angle
# whenever the film was measured, its probability from the measurement's error, else the mean rule
MEASURED_RULES = ("cobb", "measured")
RULES = (*CLASSIFIER_RULES, *MEASURED_RULES)
# Root-mean-square error of the measured largest Cobb angle against the labels on the 90 validation films, by
# what the vertebrae were read from (`spine-evaluate aasce DATA --subset val`: docs/evaluation/val_landmarks.json,
# val_mask_geometry.json; tests/service/inference/test_label_aggregation.py recomputes both from those files).
# The measured rule's p_damaged is Phi((max_deg - 40) / this); an unknown source takes the largest.
MAX_ANGLE_RMS_ERROR_DEG: dict[str, float] = {"Ap_Vertebra_landmarks": 3.54, "mask": 7.43}


def _pairs(per_mask: PerMask) -> list[tuple[float, float]]:
    pairs = list(per_mask.values()) if isinstance(per_mask, Mapping) else list(per_mask)
    if not pairs:
        raise ValueError("no per-mask scores to aggregate")
    return [(float(p_normal), float(p_damaged)) for p_normal, p_damaged in pairs]


def aggregate_max_score(per_mask: PerMask, cutoff: float = DAMAGED_CUTOFF) -> tuple[str, float]:
    """The course report's rule: the class holding the single highest per-mask class score wins.

    It has no cut-off of its own (`cutoff` is ignored). Ties go to Damaged: for a screening tool a
    false alarm costs less than a missed finding.
    """
    pairs = _pairs(per_mask)
    best_normal = max(p[0] for p in pairs)
    best_damaged = max(p[1] for p in pairs)
    if best_damaged >= best_normal:
        return CLASSES[1], best_damaged
    return CLASSES[0], best_normal


def aggregate_mean(per_mask: PerMask, cutoff: float = DAMAGED_CUTOFF) -> tuple[str, float]:
    """Damaged when the mean p_damaged over all masks is at least `cutoff`."""
    pairs = _pairs(per_mask)
    mean_damaged = sum(p[1] for p in pairs) / len(pairs)
    if mean_damaged >= cutoff:
        return CLASSES[1], mean_damaged
    return CLASSES[0], 1.0 - mean_damaged


def label_from_cobb(max_deg: float, threshold_deg: float = DAMAGED_COBB_DEG) -> str:
    """The `cobb` rule: Damaged when the largest measured Cobb angle is at least `threshold_deg`."""
    return CLASSES[1] if max_deg >= threshold_deg else CLASSES[0]


AGGREGATIONS: dict[str, Aggregation] = {"max_score": aggregate_max_score, "mean": aggregate_mean}


def aggregate(per_mask: PerMask, rule: str = "mean", cutoff: float = DAMAGED_CUTOFF) -> tuple[str, float]:
    try:
        fn = AGGREGATIONS[rule]
    except KeyError:
        raise ValueError(f"unknown aggregation {rule!r}; choose one of {', '.join(AGGREGATIONS)}") from None
    return fn(per_mask, cutoff)
