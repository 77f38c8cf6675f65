"""Calibrated probabilities for the mask classifier and for the measured angle, and how to measure calibration
(numpy only).

The classifier's softmax saturates: on real films most p_damaged are within 1e-4 of 0 or 1, so a
"score 1.0" says little. A calibration map fitted on the validation split (training/calibrate.py)
rescales the logit log(p_damaged / p_normal):

    temperature:  p' = sigmoid(logit / T)                      (one parameter; monotone, keeps the ranking)
    platt:        p' = sigmoid(slope * logit + intercept)      (two parameters)

The logit is taken from p_damaged clipped to [EPS, 1 - EPS]: float32 softmax outputs reach exactly 0
and 1, whose logit is infinite. The manifest stores the fitted map in the classifier's entry
(`calibration`), and serving applies it with `calibrate_p_damaged`.

Calibration is measured by the expected calibration error (ECE) over equal-width bins of [0, 1]:
the mean over bins, weighted by their share of samples, of |observed frequency - mean predicted
probability|. "top_label" bins the probability of the label that would be returned (max(p, 1 - p),
what a client sees as `score`, Guo et al. 2017); "positive" bins p_damaged itself.

The `measured` rule's probability (`p_damaged_from_angle`) comes from the measured largest Cobb angle instead:
how likely the true angle is to reach the Damaged line given the measurement's own error on the validation films.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

EPS = 1e-7  # clip for probabilities before taking a logit (float32 softmax outputs reach 0 and 1)
DEFAULT_BINS = 15
METHODS = ("temperature", "platt")


def clip_probability(p: np.ndarray | float, eps: float = EPS) -> np.ndarray:
    return np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)


def logit(p: np.ndarray | float, eps: float = EPS) -> np.ndarray:
    """log(p / (1 - p)) of p clipped to [eps, 1 - eps]."""
    q = clip_probability(p, eps)
    return np.log(q) - np.log1p(-q)


def sigmoid(z: np.ndarray | float) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    # exp of a non-positive number only: no overflow for large |z|
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def apply_temperature(p: np.ndarray | float, temperature: float) -> np.ndarray:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    return sigmoid(logit(p) / temperature)


def apply_platt(p: np.ndarray | float, slope: float, intercept: float) -> np.ndarray:
    return sigmoid(slope * logit(p) + intercept)


def calibrate_p_damaged(p_damaged: np.ndarray | float, calibration: Mapping[str, Any] | None) -> np.ndarray:
    """Apply a manifest `calibration` mapping ({"method": "temperature", "temperature": T} or
    {"method": "platt", "slope": a, "intercept": b}); None returns p_damaged unchanged."""
    if calibration is None:
        return np.asarray(p_damaged, dtype=np.float64)
    method = calibration.get("method")
    if method == "temperature":
        return apply_temperature(p_damaged, float(calibration["temperature"]))
    if method == "platt":
        return apply_platt(p_damaged, float(calibration["slope"]), float(calibration["intercept"]))
    raise ValueError(f"unknown calibration method {method!r}; expected one of {METHODS}")


def p_damaged_from_angle(max_deg: float, rms_error_deg: float, cutoff_deg: float) -> float:
    """Probability that the true largest Cobb angle reaches `cutoff_deg`, given the measured one and the
    measurement's error (taken as Gaussian with that root-mean-square): Phi((max_deg - cutoff_deg) / rms).
    0.5 exactly at the cut-off, so `p >= 0.5` and `max_deg >= cutoff_deg` never disagree."""
    if not rms_error_deg > 0:
        raise ValueError(f"rms_error_deg must be > 0, got {rms_error_deg}")
    return 0.5 * (1.0 + math.erf((max_deg - cutoff_deg) / (rms_error_deg * math.sqrt(2.0))))


def negative_log_likelihood(p: np.ndarray, y: np.ndarray, eps: float = EPS) -> float:
    """Mean binary cross-entropy of p_damaged against the labels (y True = Damaged)."""
    q = clip_probability(p, eps)
    y = np.asarray(y, dtype=bool)
    return float(-np.mean(np.where(y, np.log(q), np.log1p(-q))))


def brier_score(p: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((np.asarray(p, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2))


@dataclass(frozen=True)
class ReliabilityBins:
    """Equal-width bins of predicted probability: edges, and per bin the count, mean prediction, observed rate."""

    edges: np.ndarray  # n_bins + 1
    count: np.ndarray  # n_bins (int)
    mean_predicted: np.ndarray  # n_bins, NaN where empty
    observed: np.ndarray  # n_bins, NaN where empty

    @property
    def ece(self) -> float:
        filled = self.count > 0
        if not filled.any():
            return float("nan")
        weights = self.count[filled] / self.count.sum()
        return float(np.sum(weights * np.abs(self.observed[filled] - self.mean_predicted[filled])))


def reliability_bins(predicted: np.ndarray, outcome: np.ndarray, n_bins: int = DEFAULT_BINS) -> ReliabilityBins:
    """Bin `predicted` (probabilities in [0, 1]) into n_bins equal-width bins; the last bin includes 1.0."""
    predicted = np.asarray(predicted, dtype=np.float64)
    outcome = np.asarray(outcome, dtype=np.float64)
    if predicted.shape != outcome.shape:
        raise ValueError(f"predicted {predicted.shape} and outcome {outcome.shape} differ in shape")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(predicted, edges[1:-1], right=False), 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_predicted = np.bincount(index, weights=predicted, minlength=n_bins) / count
        observed = np.bincount(index, weights=outcome, minlength=n_bins) / count
    return ReliabilityBins(edges=edges, count=count, mean_predicted=mean_predicted, observed=observed)


def top_label(p_damaged: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(confidence of the label p >= 0.5 would return, whether that label is right)."""
    p = np.asarray(p_damaged, dtype=np.float64)
    y = np.asarray(y, dtype=bool)
    predicted_damaged = p >= 0.5
    return np.where(predicted_damaged, p, 1.0 - p), predicted_damaged == y


def expected_calibration_error(
    p_damaged: np.ndarray,
    y: np.ndarray,
    n_bins: int = DEFAULT_BINS,
    mode: Literal["top_label", "positive"] = "top_label",
) -> float:
    """ECE over n_bins equal-width bins; mode "top_label" (the returned score) or "positive" (p_damaged)."""
    if mode == "top_label":
        confidence, correct = top_label(p_damaged, y)
        return reliability_bins(confidence, correct, n_bins).ece
    if mode == "positive":
        return reliability_bins(p_damaged, np.asarray(y, dtype=bool), n_bins).ece
    raise ValueError(f"unknown ECE mode {mode!r}")
