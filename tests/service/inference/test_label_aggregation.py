from __future__ import annotations

import pytest

from spine_engine import AGGREGATIONS, aggregate, aggregate_max_score, aggregate_mean


def test_max_score_takes_the_class_of_the_single_highest_score() -> None:
    # One very confident Normal mask beats several mildly Damaged ones (the course report's rule).
    per_mask = {"a": (0.97, 0.03), "b": (0.4, 0.6), "c": (0.35, 0.65)}
    assert aggregate_max_score(per_mask) == ("Normal", 0.97)
    assert aggregate_max_score({"a": (0.2, 0.8), "b": (0.7, 0.3)}) == ("Damaged", 0.8)
    assert aggregate_max_score([(0.5, 0.5)]) == ("Damaged", 0.5)  # ties go to Damaged


def test_mean_thresholds_mean_p_damaged() -> None:
    per_mask = {"a": (0.97, 0.03), "b": (0.4, 0.6), "c": (0.35, 0.65)}
    label, score = aggregate_mean(per_mask)
    assert label == "Normal" and score == pytest.approx(1 - (0.03 + 0.6 + 0.65) / 3)
    label, score = aggregate_mean({"a": (0.5, 0.5)})
    assert label == "Damaged" and score == 0.5


def test_registry_of_rules() -> None:
    assert set(AGGREGATIONS) == {"max_score", "mean"}
    assert aggregate({"a": (0.1, 0.9)}, "mean") == ("Damaged", 0.9)
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate({"a": (0.1, 0.9)}, "vote")
    with pytest.raises(ValueError, match="no per-mask"):
        aggregate_max_score({})
