from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from spine_core.calibration import p_damaged_from_angle
from spine_core.cobb import CobbResult
from spine_engine import AGGREGATIONS, aggregate, aggregate_max_score, aggregate_mean
from spine_engine.aggregation import MAX_ANGLE_RMS_ERROR_DEG
from spine_engine.decision import DecisionRules
from spine_engine.errors import NoMeasurementError


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


# The measured rule (the default): the measured largest Cobb angle decides, as the labels define Damaged.
def _rules() -> DecisionRules:
    return DecisionRules(classifier="Mask_Classifier", calibration=None, threshold=0.6, demonstration=frozenset())


def _cobb(max_deg: float, reliable: bool | None = True) -> CobbResult:
    return CobbResult([0.0, max_deg, 0.0], max_deg, "C", [], "severe" if max_deg >= 40 else "moderate", reliable=reliable)


NORMAL_MASK = {"Ap_Vertebra": (0.9, 0.1)}  # the classifier reads Normal


def test_measured_rule_follows_the_angle_against_the_classifier() -> None:
    _, decision = _rules().decide(NORMAL_MASK, _cobb(45.0), "measured", False, measured_from="Ap_Vertebra_landmarks")
    assert (decision.label, decision.rule, decision.threshold) == ("Damaged", "measured", 0.5)
    assert decision.decided_by == ["Ap_Vertebra"]
    rms = MAX_ANGLE_RMS_ERROR_DEG["Ap_Vertebra_landmarks"]
    assert decision.p_damaged == pytest.approx(p_damaged_from_angle(45.0, rms, 40.0)) and decision.p_damaged > 0.5
    assert decision.score == pytest.approx(decision.p_damaged)
    # every rule's outcome is still reported: the classifier's own says Normal
    assert decision.rules["mean"].label == "Normal" and decision.rules["mean"].p_damaged == pytest.approx(0.1)
    assert decision.rules["measured"].max_deg == 45.0 and decision.rules["measured"].cutoff == 40.0
    _, below = _rules().decide({"Ap_Vertebra": (0.1, 0.9)}, _cobb(35.0), "measured", False, "Ap_Vertebra_landmarks")
    assert below.label == "Normal" and below.score == pytest.approx(1 - below.p_damaged) and below.p_damaged < 0.5


def test_measured_rule_decides_on_an_uncertain_curve_where_the_cobb_rule_does_not() -> None:
    _, decision = _rules().decide(NORMAL_MASK, _cobb(45.0, reliable=False), "measured", False, "Ap_Vertebra_landmarks")
    assert decision.label == "Damaged" and "cobb" not in decision.rules
    with pytest.raises(NoMeasurementError):
        _rules().decide(NORMAL_MASK, _cobb(45.0, reliable=False), "cobb", False, "Ap_Vertebra_landmarks")
    # on a reliable curve the cobb rule is the measured one: its label, its probability, its cut-off
    _, cobb = _rules().decide(NORMAL_MASK, _cobb(45.0), "cobb", False, "Ap_Vertebra_landmarks")
    _, measured = _rules().decide(NORMAL_MASK, _cobb(45.0), "measured", False, "Ap_Vertebra_landmarks")
    assert (cobb.label, cobb.p_damaged, cobb.threshold) == (measured.label, measured.p_damaged, 0.5)
    assert cobb.rule == "cobb" and cobb.rules["cobb"] == measured.rules["measured"]


def test_measured_rule_without_a_measurement_is_the_mean_rule_and_says_so() -> None:
    _, decision = _rules().decide({"Ap_Vertebra": (0.3, 0.7)}, None, "measured", False)
    assert (decision.label, decision.rule, decision.threshold) == ("Damaged", "mean", 0.6)
    assert decision.p_damaged == pytest.approx(0.7) and "measured" not in decision.rules


def test_a_less_precise_measurement_is_trusted_less() -> None:
    rules = _rules()
    _, landmarks = rules.decide(NORMAL_MASK, _cobb(44.0), "measured", False, "Ap_Vertebra_landmarks")
    _, mask = rules.decide(NORMAL_MASK, _cobb(44.0), "measured", False, "mask")
    _, unknown = rules.decide(NORMAL_MASK, _cobb(44.0), "measured", False, "some_future_model")
    assert landmarks.p_damaged > mask.p_damaged > 0.5 and unknown.p_damaged == pytest.approx(mask.p_damaged)


def test_study_label_of_several_images_weighs_each_against_its_own_cut_off() -> None:
    rules = _rules()
    _, measured = rules.decide(NORMAL_MASK, _cobb(41.0), "measured", False, "Ap_Vertebra_landmarks")  # p ~0.61, cut 0.5
    _, classified = rules.decide({"Ap_Vertebra": (0.45, 0.55)}, None, "measured", False)  # p 0.55, cut 0.6
    study = rules.study_label([measured, classified])
    mean_p = (measured.p_damaged + classified.p_damaged) / 2
    assert study.label == ("Damaged" if mean_p >= 0.55 else "Normal") and study.aggregation == "mean of mean, measured"
    same = rules.study_label([measured, measured])
    assert same.label == "Damaged" and same.aggregation == "mean of measured"


def test_the_angle_error_table_is_what_the_committed_evaluations_measured() -> None:
    """MAX_ANGLE_RMS_ERROR_DEG against the per-film rows of the evaluations it was read from."""
    evaluations = Path(__file__).resolve().parents[3] / "docs" / "evaluation"
    for source, name in (("Ap_Vertebra_landmarks", "val_landmarks.json"), ("mask", "val_mask_geometry.json")):
        rows = json.loads((evaluations / name).read_text())["per_image"]
        errors = np.array([max(r["predicted_angles"]) - r["max_cobb"] for r in rows if r.get("predicted_angles")])
        assert len(errors) >= 80
        assert MAX_ANGLE_RMS_ERROR_DEG[source] == pytest.approx(float(np.sqrt(np.mean(errors**2))), abs=0.005), source


def test_a_label_the_classifier_disagrees_with_says_so() -> None:
    rules = _rules()
    _, against = rules.decide(NORMAL_MASK, _cobb(45.0), "measured", False, "Ap_Vertebra_landmarks")
    warning = rules.disagreement(against)
    assert warning is not None and "reads this film as Normal (p_damaged 0.10)" in warning and "45.0°" in warning
    _, agreeing = rules.decide({"Ap_Vertebra": (0.2, 0.8)}, _cobb(45.0), "measured", False, "Ap_Vertebra_landmarks")
    assert rules.disagreement(agreeing) is None
    _, by_classifier = rules.decide(NORMAL_MASK, _cobb(45.0), "mean", False, "Ap_Vertebra_landmarks")
    assert by_classifier.label == "Normal" and rules.disagreement(by_classifier) is None
