"""The ends model end to end on synthetic films: training (resumable) -> ONNX export with parity -> manifest (kind
ends, validated only by the service's figures with and without it) -> served by the registry, voting in the levels."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the train extra (tensorflow, tf2onnx) is not installed")

from test_tilt_training import trained_and_exported

from spine_core.manifest import load_manifest
from spine_core.structures import ENDS_MODEL_NAME
from spine_core.vertebra_ends import ENDS_CLASSES, ENDS_CROP_HW, ends_crops
from spine_engine.registry import ModelRegistry
from training.cli import train_main
from training.datasets import read_aasce_dataset
from training.ends import extended_corners
from training.ends_export import is_validated
from training.export import PARITY_TOLERANCE
from training.export_cli import export_main

# `slow` (TensorFlow), by path: tests/conftest.py


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    return trained_and_exported("ends", tmp_path_factory.mktemp("ends"))


def test_the_run_resumes_and_records_its_figures(exported):
    state = json.loads((exported["root"] / "run" / "state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == [1, 2]
    info = json.loads((exported["root"] / "run" / "run_info.json").read_text())
    assert info["kind"] == "ends" and info["epochs"] == 2 and info["crop_hw"] == list(ENDS_CROP_HW)
    assert {"val_accuracy", "val_t1_pick", "val_l5_pick"} <= set(info["metrics"])


def test_export_is_parity_checked_and_not_validated_without_the_service_figures(exported):
    entry = load_manifest(exported["models"]).by_name()[ENDS_MODEL_NAME]
    assert entry.kind == "ends" and entry.output_shape == [None, len(ENDS_CLASSES)] and entry.classes == list(ENDS_CLASSES)
    assert entry.parity_max_abs_diff is not None and entry.parity_max_abs_diff <= PARITY_TOLERANCE
    assert entry.validated is False and "training/ends_export.py" in entry.notes


def test_validated_only_when_served_it_raises_level_accuracy_and_keeps_smape():
    def run(smape: float, levels: float) -> dict:
        return {"cobb": {"smape_all_films_pct": smape}, "landmarks": {"level_accuracy": levels}}

    assert is_validated(run(8.9, 0.82), run(9.0, 0.80))
    assert not is_validated(run(9.1, 0.82), run(9.0, 0.80))  # the angles got worse
    assert not is_validated(run(8.9, 0.80), run(9.0, 0.80))  # the levels did not improve
    assert not is_validated(run(8.9, 0.82), None)


def test_the_registry_serves_it_and_it_answers_a_distribution_per_vertebra(exported):
    registry = ModelRegistry.load(exported["models"], providers=["CPUExecutionProvider"], warmup=True)
    model = registry.ends_model()
    assert model is not None and model.servable and model.warm
    sample = read_aasce_dataset(exported["aasce"])[0]
    pixels = sample.image()
    h, w = pixels.shape[:2]
    corners = extended_corners((sample.landmarks * [w, h]).reshape(17, 4, 2), np.array([-1, 0, 16, 17]))
    probs = registry.infer([(model, ends_crops(pixels, corners, model.input_hw))])[0]
    assert probs.shape == (4, len(ENDS_CLASSES))
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_extended_corners_continue_the_chain_by_its_end_steps():
    corners = np.zeros((17, 4, 2))
    corners[..., 1] = np.arange(17)[:, None] * 10.0  # centres 10 px apart, straight down
    out = extended_corners(corners, np.array([-2, -1, 0, 16, 17, 18]))
    np.testing.assert_allclose(out.mean(axis=1)[:, 1], [-20, -10, 0, 160, 170, 180])


def test_two_runs_export_as_one_graph_averaging_their_probabilities(exported):
    import onnxruntime as ort

    root, aasce = exported["root"], exported["aasce"]
    train_main(["ends", str(aasce), "--run-dir", str(root / "run_s1"), "--epochs", "1", "--batch-size", "16", "--seed", "1"])
    crops = np.random.default_rng(0).normal(size=(3, *ENDS_CROP_HW, 1)).astype(np.float32)
    answers = {}
    for key, dirs in {"a": [root / "run"], "b": [root / "run_s1"], "mean": [root / "run", root / "run_s1"]}.items():
        models = root / f"models_{key}"
        export_main(["ends", "--run-dir", *map(str, dirs), "--data", str(aasce), "--models", str(models), "--no-triton-config"])
        entry = load_manifest(models).by_name()[ENDS_MODEL_NAME]
        session = ort.InferenceSession(str(models / entry.file), providers=["CPUExecutionProvider"])
        answers[key] = session.run([entry.output_name], {entry.input_name: crops})[0]
    np.testing.assert_allclose(answers["mean"], (answers["a"] + answers["b"]) / 2, atol=1e-5)
    assert not np.allclose(answers["a"], answers["b"])
    assert "the mean of 2" in entry.architecture and len(entry.metrics["crops_val_loss_of_each_run"]) == 2


def test_a_fine_tuning_adds_the_full_body_bodies_but_those_of_the_held_out_fold(exported):
    from training.ends_full_body import LabelledBodies, crop_figures, held_out_films, load_bodies
    from training.tilt import build_tilt_model

    root, aasce = exported["root"], exported["aasce"]
    samples = read_aasce_dataset(aasce)[:4]  # stand-ins for full-body films: any film with bodies on it serves
    films = {}
    for sample in samples:
        h, w = sample.image().shape[:2]
        corners = (sample.landmarks * [w, h]).reshape(17, 4, 2)[:3]
        films[sample.image_path.name] = {"corners": corners.tolist(), "classes": ["T1", "T2", "middle"]}
    labels = root / "ends_labels.json"
    labels.write_text(json.dumps({"films": films}))
    images = samples[0].image_path.parent
    assert held_out_films(labels, 2, 0) == sorted(films)[0::2] and held_out_films(labels, 0, -1) == []
    bodies = load_bodies(images, labels, skip=held_out_films(labels, 2, 0))
    assert isinstance(bodies, LabelledBodies) and len(bodies.names) == 2 and sorted(films)[0] not in bodies.names
    assert [list(c) for c in bodies.classes] == [[ENDS_CLASSES.index(c) for c in ("T1", "T2", "middle")]] * 2

    run = root / "run_full_body"
    # learning rate 0: the convolutions keep the weights the run started from
    args = ["--epochs", "1", "--batch-size", "16", "--lr", "0", "--init-from", str(root / "run"), "--full-body", str(images)]
    args += ["--full-body-labels", str(labels), "--folds", "2", "--fold", "0"]
    train_main(["ends", str(aasce), "--run-dir", str(run), *args])
    info = json.loads((run / "run_info.json").read_text())
    assert info["full_body_films"] == bodies.names and info["full_body_held_out"] == sorted(films)[0::2]
    assert info["initialised_from"].endswith("run/best.weights.h5") and "2 marked full-body films" in info["training_data"]
    kernels = []
    for weights in (root / "run" / "best.weights.h5", run / "best.weights.h5"):
        model = build_tilt_model(ENDS_CROP_HW, name="vertebra_ends", outputs=len(ENDS_CLASSES), activation="softmax")
        model.load_weights(weights)
        kernels.append(model.layers[1].get_weights()[0])
    np.testing.assert_array_equal(kernels[0], kernels[1])
    models = root / "models_full_body"
    export_main(["ends", "--run-dir", str(run), "--data", str(aasce), "--models", str(models), "--no-triton-config"])
    notes = load_manifest(models).by_name()[ENDS_MODEL_NAME].notes
    assert notes.startswith("Fine-tuned from ") and "the chain bodies of 2 hand-marked full-body films" in notes
    figures = crop_figures([run], bodies)[str(run)]
    assert figures["bodies"] == 6 and 0.0 <= figures["accuracy"] <= 1.0 and figures["t1_films"] == 2
    assert figures["l5_films"] == 0 and figures["t1_picked"] <= 2  # no L5 labelled: no L5 pick to count
