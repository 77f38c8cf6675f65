"""training.calibrate: fitting the map, choosing the cut-off, cross-validating, writing the manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from spine_core import calibration as cal
from spine_core.manifest import load_manifest
from training import calibrate as tc

REPO = Path(__file__).resolve().parents[2]


def _synthetic_films(n: int = 4000, temperature: float = 3.0, shift: float = 0.0, seed: int = 0) -> tc.Films:
    """Raw scores that are an overconfident (and optionally shifted) version of the true probability."""
    rng = np.random.default_rng(seed)
    true_logit = rng.normal(0, 1.5, n)
    y = rng.uniform(0, 1, n) < cal.sigmoid(true_logit)
    raw = cal.sigmoid((true_logit - shift) * temperature)
    names = [f"sunhl-1th-{i // 2} {'AB'[i % 2]} AP.jpg" for i in range(n)]
    return tc.Films(names, raw, y, [str(i // 2) for i in range(n)], "synthetic")


def test_temperature_is_recovered():
    films = _synthetic_films(temperature=3.0)
    mapping = tc.fit_calibration(films.p_damaged, films.damaged, "temperature")
    assert mapping["method"] == "temperature"
    assert mapping["temperature"] == pytest.approx(3.0, rel=0.1)


def test_platt_recovers_slope_and_intercept():
    films = _synthetic_films(temperature=2.0, shift=1.0)  # raw logit = 2 * (z - 1): z = raw / 2 + 1
    mapping = tc.fit_calibration(films.p_damaged, films.damaged, "platt")
    assert mapping["slope"] == pytest.approx(0.5, rel=0.1)
    assert mapping["intercept"] == pytest.approx(1.0, abs=0.15)


def test_fitting_lowers_the_likelihood_loss_and_the_calibration_error():
    films = _synthetic_films(temperature=3.0, shift=0.5)
    for method in cal.METHODS:
        mapping = tc.fit_calibration(films.p_damaged, films.damaged, method)
        after = cal.calibrate_p_damaged(films.p_damaged, mapping)
        assert cal.negative_log_likelihood(after, films.damaged) < cal.negative_log_likelihood(films.p_damaged, films.damaged)
        assert cal.expected_calibration_error(after, films.damaged) < cal.expected_calibration_error(
            films.p_damaged, films.damaged
        )


def test_screening_rule_takes_the_most_specific_cutoff_that_keeps_sensitivity():
    scores = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    y = np.array([0, 0, 1, 0, 0, 1, 1, 1, 1, 1], dtype=bool)
    # sensitivity >= 0.8 allows missing one of six Damaged: the cut-off sits between 0.5 and 0.6
    assert tc.threshold_by_rule(scores, y, "screening", 0.8) == pytest.approx(0.55)
    # sensitivity 1 needs the Damaged film at 0.3 flagged: between 0.2 and 0.3
    assert tc.threshold_by_rule(scores, y, "screening", 1.0) == pytest.approx(0.25)
    assert tc.threshold_by_rule(scores, y, "accuracy") == pytest.approx(0.55)
    assert tc.threshold_by_rule(scores, y, "youden") == pytest.approx(0.55)
    with pytest.raises(ValueError):
        tc.threshold_by_rule(scores, y, "coin")


def test_threshold_is_returned_on_the_calibrated_scale():
    films = _synthetic_films(n=400)
    mapping = {"method": "platt", "slope": 0.5, "intercept": -1.0}
    threshold = tc.choose_threshold(films.p_damaged, films.damaged, mapping)
    calibrated = cal.calibrate_p_damaged(films.p_damaged, mapping)
    raw_cut = cal.sigmoid(tc.threshold_by_rule(cal.logit(films.p_damaged), films.damaged))
    np.testing.assert_array_equal(calibrated >= threshold, films.p_damaged >= raw_cut)


def test_grouped_folds_never_split_a_patient_and_cover_everything():
    groups = ["a", "a", "b", "c", "c", "c", "d", "e", "f", "f"]
    folds = tc.grouped_folds(groups, 3, seed=0)
    assert sorted(np.concatenate(folds).tolist()) == list(range(len(groups)))
    for fold in folds:
        inside = {groups[i] for i in fold}
        outside = {groups[i] for f in folds if f is not fold for i in f}
        assert not inside & outside


def _evaluation_json(films: tc.Films) -> dict:
    return {
        "subset": "val",
        "split": "synthetic",
        "classification": {"threshold_deg": 40.0},
        "per_image": [
            {"image": n, "p_damaged": float(p), "max_cobb": 50.0 if d else 20.0}
            for n, p, d in zip(films.names, films.p_damaged, films.damaged, strict=True)
        ],
    }


def test_cli_writes_result_figure_and_only_the_classifier_fields_of_the_manifest(tmp_path: Path):
    films = _synthetic_films(n=120, seed=3)
    source = tmp_path / "eval.json"
    source.write_text(json.dumps(_evaluation_json(films)))
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(REPO / "exported_models" / "manifest.json", models / "manifest.json")
    before = json.loads((models / "manifest.json").read_text())

    out, figure = tmp_path / "calibration.json", tmp_path / "calibration.png"
    argv = [str(source), "--out", str(out), "--figure", str(figure), "--repeats", "2", "--write-manifest", str(models)]
    assert tc.main(argv) == 0

    result = json.loads(out.read_text())
    assert result["calibration"]["method"] == "platt"
    assert result["in_sample"]["after"]["nll"] < result["in_sample"]["before"]["nll"]
    assert result["cross_validated"]["folds"] == 5 and len(result["films"]) == 120
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    manifest = load_manifest(models)  # still validates
    entry = manifest.by_name()["Mask_Classifier"]
    assert entry.decision_threshold == pytest.approx(result["decision_threshold"])
    assert entry.calibration is not None and entry.calibration.slope == pytest.approx(result["calibration"]["slope"])
    after = json.loads((models / "manifest.json").read_text())
    for old, new in zip(before["models"], after["models"], strict=True):
        if old["name"] == "Mask_Classifier":
            new_fields = ("calibration", "decision_threshold")
            assert {k: v for k, v in new.items() if k not in new_fields} == {k: v for k, v in old.items() if k not in new_fields}
        else:
            assert new == old  # other entries gain no fields


def test_evaluation_without_classifier_scores_is_an_error():
    with pytest.raises(ValueError, match="no per-image p_damaged"):
        tc.films_from_evaluation({"per_image": [{"image": "x.jpg", "max_cobb": 10}]}, "eval.json")
