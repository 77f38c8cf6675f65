"""Annotations -> retrain one structure -> export -> held-out Dice -> the promotion rule -> POST /models/reload.

The annotated studies are written by the service's own storage (service/annotations.py), as POST /annotations
writes them; training runs a tiny U-Net for two epochs on the CPU.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the train extra (tensorflow, tf2onnx) is not installed")

from service.annotations import AnnotationUpload, save_annotation
from spine_core.manifest import load_manifest
from training.annotated import split_studies
from training.cli import train_main
from training.datasets import read_course_dataset, synthetic_spine
from training.evaluate import main as evaluate_main
from training.export_cli import export_main
from training.promotion import MIN_HELDOUT_STUDIES, THRESHOLDS, decide, promote

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "service"))
from spine_service_testlib import encode, make_settings, start_client

# `slow` (TensorFlow), by path: tests/conftest.py
STRUCTURE = "Ap_Pedicle"


def _annotate(root: Path, n: int) -> None:
    """n studies of n - 1 patients (the last two share one: they must land on the same side of the split)."""
    for k in range(n):
        image, mask = synthetic_spine(96, 48, seed=k)
        upload = AnnotationUpload(
            view="AP",
            study_class="Damaged" if k % 2 else "Normal",
            film=encode(image, "JPEG", quality=95),
            film_filename=f"{k}.jpg",
            masks={STRUCTURE: encode((mask * 255).astype(np.uint8))},
            annotator="test",
            study_id=f"study-{k}",
            patient_id=f"p{min(k, n - 2)}",
        )
        save_annotation(root, upload, 10**8)


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("annotated")
    root, run, models = base / "annotations", base / "runs" / STRUCTURE, base / "models"
    _annotate(root, 6)
    small = [
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--filters",
        "4",
        "--num-layers",
        "2",
        "--repeat",
        "2",
        "--input-hw",
        "64",
        "32",
    ]
    train_main(["unet", "--data", str(root), "--structure", STRUCTURE, "--run-dir", str(run), *small])
    export_main(["unet", "--run-dir", str(run), "--models", str(models), "--no-triton-config"])
    evaluate_main(["course", str(root), "--models", str(models), "--heldout-of", str(run), "--json", str(base / "heldout.json")])
    return {"root": root, "run": run, "models": models, "eval": base / "heldout.json"}


def test_split_keeps_a_patient_on_one_side(loop: dict[str, Path]) -> None:
    train, heldout = split_studies(read_course_dataset(loop["root"]), STRUCTURE)
    assert sorted(train + heldout) == sorted(f"{'Damaged' if k % 2 else 'Normal'}/study-{k}" for k in range(6))
    assert heldout and not set(train) & set(heldout)
    # study-4 and study-5 are one patient (p4)
    assert ("Normal/study-4" in heldout) == ("Damaged/study-5" in heldout)


def test_training_from_the_folder_is_resumable_and_names_its_heldout_studies(loop: dict[str, Path]) -> None:
    info = json.loads((loop["run"] / "run_info.json").read_text())
    assert info["structure"] == STRUCTURE and info["validated"] is False and info["validation_set"] == "held-out studies"
    assert info["heldout_studies"] == split_studies(read_course_dataset(loop["root"]), STRUCTURE)[1]
    assert info["epochs"] == 2 and 0.0 <= info["metrics"]["val_dice_mean"] <= 1.0
    state = json.loads((loop["run"] / "state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == [1, 2]


def test_evaluate_scores_the_heldout_studies_of_this_model(loop: dict[str, Path]) -> None:
    result = json.loads(loop["eval"].read_text())
    info = json.loads((loop["run"] / "run_info.json").read_text())
    held = result["heldout"]
    assert held["structure"] == STRUCTURE and held["n_studies"] == len(info["heldout_studies"])
    assert sorted({r["study"] for r in result["per_image"]}) == sorted(info["heldout_studies"])
    assert len(held["dice"]) == result["segmentation"][STRUCTURE]["n"] == held["n_studies"]
    entry = load_manifest(loop["models"]).by_name()[STRUCTURE]
    assert result["models"][STRUCTURE]["sha256"] == entry.sha256
    assert entry.validated is False and "DEMONSTRATION" in entry.notes


@pytest.mark.parametrize(
    ("dices", "n_studies", "validated"),
    [
        ([0.9, 0.88, 0.92] * 12, 36, True),  # enough studies, lower bound well over 0.70
        ([0.9, 0.88, 0.92] * 8, 24, False),  # too few studies, however good
        ([0.72, 0.60, 0.80] * 12, 36, False),  # mean 0.707 >= 0.70, but its 95 % lower bound is not
        ([0.2] * 40, 40, False),  # a demonstration model's figure
    ],
)
def test_promotion_rule_both_ways(dices: list[float], n_studies: int, validated: bool) -> None:
    decision = decide(STRUCTURE, dices, n_studies)
    assert decision.validated is validated
    assert decision.threshold == THRESHOLDS[STRUCTURE] and decision.min_studies == MIN_HELDOUT_STUDIES
    assert bool(decision.reasons) is not validated


def test_promote_writes_the_decision_and_reload_serves_it(loop: dict[str, Path], tmp_path: Path) -> None:
    models = loop["models"]
    client = start_client(make_settings(models, warmup=False))
    try:
        before = {m["name"]: m for m in client.get("/models").json()["models"]}[STRUCTURE]
        assert before["validated"] is False
        # The real held-out figures: 1-2 studies, so the rule refuses.
        decision = promote(models, STRUCTURE, loop["eval"])
        assert decision.validated is False and any("held-out studies" in r for r in decision.reasons)
        # Figures that meet the rule, for this very file (the sha256 must match): promoted.
        good = json.loads(loop["eval"].read_text())
        good["heldout"] = {**good["heldout"], "n_studies": 40, "dice": [0.91, 0.89, 0.9, 0.92] * 10}
        (tmp_path / "good.json").write_text(json.dumps(good))
        assert promote(models, STRUCTURE, tmp_path / "good.json").validated is True
        entry = load_manifest(models).by_name()[STRUCTURE]
        assert entry.validated is True and "DEMONSTRATION" not in entry.notes
        assert entry.metrics["heldout_studies"] == 40 and entry.metrics["promotion"]["validated"] is True
        # The service picks it up without a restart.
        r = client.post("/models/reload")
        assert r.status_code == 200, r.text
        after = {m["name"]: m for m in r.json()["models"]}[STRUCTURE]
        assert after["validated"] is True and after["metrics"]["heldout_dice_mean"] == pytest.approx(0.905)
        assert {m["name"]: m for m in client.get("/models").json()["models"]}[STRUCTURE]["validated"] is True
        # Figures of another file are refused.
        good["models"][STRUCTURE]["sha256"] = "0" * 64
        (tmp_path / "other.json").write_text(json.dumps(good))
        with pytest.raises(SystemExit, match="sha256"):
            promote(models, STRUCTURE, tmp_path / "other.json")
    finally:
        client.__exit__(None, None, None)
