"""The tilt model end to end on synthetic films: training (resumable) -> ONNX export with parity -> manifest (kind
tilt, validated only by the service's figures with and without it) -> served by the registry, turning vertebrae."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the train extra (tensorflow, tf2onnx) is not installed")

from spine_core.cobb import LEVELS
from spine_core.manifest import load_manifest
from spine_core.structures import TILT_MODEL_NAME
from spine_core.vertebra_tilt import CROP_HW, MAX_TURN_DEG, cobb_vectors
from spine_core.vertebrae import Vertebra, VertebraeResult
from spine_engine.measurement import second_look
from spine_engine.registry import ModelRegistry
from training.cli import train_main
from training.datasets import read_aasce_dataset, write_synthetic_aasce_dataset
from training.export import PARITY_TOLERANCE
from training.export_cli import export_main
from training.tilt_export import is_validated

# `slow` (TensorFlow), by path: tests/conftest.py


def trained_and_exported(kind: str, root: Path) -> dict[str, Path]:
    """A crop model (`tilt`, `ends`) trained 1 epoch, resumed to 2 and exported, on a small synthetic AASCE set."""
    aasce = write_synthetic_aasce_dataset(root / "aasce", n_patients=6, size=(384, 160))
    models = root / "models"
    train_main([kind, str(aasce), "--run-dir", str(root / "run"), "--epochs", "1", "--batch-size", "16"])
    train_main([kind, str(aasce), "--run-dir", str(root / "run"), "--epochs", "2", "--batch-size", "16"])  # resumes
    export_main([kind, "--run-dir", str(root / "run"), "--data", str(aasce), "--models", str(models)])
    return {"root": root, "aasce": aasce, "models": models}


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    return trained_and_exported("tilt", tmp_path_factory.mktemp("tilt"))


def test_two_runs_export_as_one_graph_answering_their_mean(exported):
    import onnxruntime as ort

    root, aasce = exported["root"], exported["aasce"]
    train_main(["tilt", str(aasce), "--run-dir", str(root / "run_s1"), "--epochs", "1", "--batch-size", "16", "--seed", "1"])
    runs = {"a": [root / "run"], "b": [root / "run_s1"], "mean": [root / "run", root / "run_s1"]}
    answers = {}
    crops = np.random.default_rng(0).normal(size=(5, *CROP_HW, 1)).astype(np.float32)
    for key, dirs in runs.items():
        models = root / f"models_{key}"
        export_main(["tilt", "--run-dir", *map(str, dirs), "--data", str(aasce), "--models", str(models), "--no-triton-config"])
        entry = load_manifest(models).by_name()[TILT_MODEL_NAME]
        session = ort.InferenceSession(str(models / entry.file), providers=["CPUExecutionProvider"])
        answers[key] = session.run([entry.output_name], {entry.input_name: crops})[0]
    np.testing.assert_allclose(answers["mean"], (answers["a"] + answers["b"]) / 2, atol=1e-5)
    assert not np.allclose(answers["a"], answers["b"])  # two different runs
    assert "the mean of 2" in entry.architecture and len(entry.metrics["crops_val_tilt_mae_of_each_run"]) == 2


def test_the_run_resumes_and_records_its_figures(exported):
    state = json.loads((exported["root"] / "run" / "state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    info = json.loads((exported["root"] / "run" / "run_info.json").read_text())
    assert info["kind"] == "tilt" and info["epochs"] == 2
    assert {"val_tilt_mae", "val_tilt_mae_before"} <= set(info["metrics"])


def test_export_is_parity_checked_and_not_validated_without_the_service_figures(exported):
    entry = load_manifest(exported["models"]).by_name()[TILT_MODEL_NAME]
    assert entry.kind == "tilt" and entry.input_shape == [None, *CROP_HW, 1] and entry.output_shape == [None, 1]
    assert entry.parity_max_abs_diff is not None and entry.parity_max_abs_diff <= PARITY_TOLERANCE
    assert entry.validated is False and "training/tilt_export.py" in entry.notes


def test_validated_only_when_served_it_lowers_smape_and_keeps_the_largest_angle():
    def run(smape: float, mae: float) -> dict:
        return {"cobb": {"smape_all_films_pct": smape, "max_angle_mae_deg": mae}}

    assert is_validated(run(8.5, 2.9), run(9.6, 3.0))
    assert not is_validated(run(8.5, 3.1), run(9.6, 3.0))  # the largest angle got worse
    assert not is_validated(run(9.7, 2.9), run(9.6, 3.0))
    assert not is_validated(run(8.5, 2.9), None)


def test_the_registry_serves_it_and_it_turns_each_vertebra_within_the_cap(exported):
    registry = ModelRegistry.load(exported["models"], providers=["CPUExecutionProvider"], warmup=True)
    model = registry.tilt_model()
    assert model is not None and model.servable and model.warm
    sample = read_aasce_dataset(exported["aasce"])[0]
    pixels = sample.image()
    h, w = pixels.shape[:2]
    corners = (sample.landmarks * [w, h]).reshape(17, 4, 2)
    vertebrae = VertebraeResult([Vertebra(level, c, 1.0, 100) for level, c in zip(LEVELS, corners, strict=True)], reason=None)
    turned, run_ms = second_look(registry, model, pixels, vertebrae)
    after = np.stack([v.corners for v in turned.vertebrae])
    turn = np.degrees(cobb_vectors(after)[0] - cobb_vectors(corners)[0])
    assert run_ms > 0 and np.all(np.abs(turn) <= MAX_TURN_DEG + 1e-6)
    assert np.allclose(after.mean(axis=1), corners.mean(axis=1))  # turned about their centres
    assert [v.level for v in turned.vertebrae] == list(LEVELS)
