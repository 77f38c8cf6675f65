"""Evaluation metrics in plain numpy (used by training, evaluation and tests; no TensorFlow)."""

from __future__ import annotations

import numpy as np


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty (nothing to find, nothing found)."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    total = pred.sum() + truth.sum()
    if total == 0:
        return 1.0
    return float(2.0 * np.logical_and(pred, truth).sum() / total)


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic (ties count half). NaN if one class is absent."""
    labels = np.asarray(labels, bool)
    scores = np.asarray(scores, np.float64)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), np.float64)
    sorted_scores = scores[order]
    # Average rank for tied scores.
    start = 0
    for end in range(1, len(scores) + 1):
        if end == len(scores) or sorted_scores[end] != sorted_scores[start]:
            ranks[order[start:end]] = (start + end + 1) / 2.0
            start = end
    u = ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    labels, predictions = np.asarray(labels, bool), np.asarray(predictions, bool)
    return float((labels == predictions).mean()) if len(labels) else float("nan")


def sensitivity(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Share of the positives predicted positive (recall); NaN when there is no positive."""
    labels, predictions = np.asarray(labels, bool), np.asarray(predictions, bool)
    return float(predictions[labels].mean()) if labels.any() else float("nan")


def specificity(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Share of the negatives predicted negative; NaN when there is no negative."""
    labels, predictions = np.asarray(labels, bool), np.asarray(predictions, bool)
    return float((~predictions[~labels]).mean()) if (~labels).any() else float("nan")
