"""The landmark model end to end on synthetic films: cache -> training (resumable) -> ONNX export with parity ->
manifest (kind landmarks, validated by its figures) -> served by the registry -> spine-evaluate's figures.

Tiny frames (64x32) keep it to about a minute on a CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the train extra (tensorflow, tf2onnx) is not installed")

from spine_core.landmarks import LEVEL_CHANNEL, LEVEL_SCALE, N_CHANNELS, decode
from spine_core.manifest import load_manifest
from spine_core.structures import LANDMARK_MODEL_NAME
from training.augment import AugmentConfig, affine_params
from training.cli import train_main
from training.datasets import write_synthetic_aasce_dataset
from training.evaluate import main as evaluate_main
from training.export_cli import export_main
from training.landmarks import LEVEL_LOSS_WEIGHT, landmark_loss, load_landmark_cache, make_targets, warp_corners
from training.landmarks_export import MAX_VALIDATED_SMAPE, is_validated

# `slow` (TensorFlow), by path: tests/conftest.py


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("landmarks")
    aasce = write_synthetic_aasce_dataset(root / "aasce", n_patients=6, size=(192, 80))
    models = root / "models"
    hw = ["--height", "64", "--width", "32"]
    train_main(["cache", "aasce", str(aasce), str(root / "aasce.npz"), *hw])
    train_main(["cache", "aasce-landmarks", str(aasce), str(root / "landmarks.npz"), *hw, "--jpeg-quality", "95"])
    small = ["--epochs", "1", "--batch-size", "4"]
    train_main(["unet", "--cache", str(root / "aasce.npz"), "--structure", "Ap_Vertebra", "--run-dir", str(root / "ap"), *small])
    train_main(["classifier", "--cache", str(root / "aasce.npz"), "--run-dir", str(root / "clf"), *small])
    train_main(
        [
            "landmarks",
            "--cache",
            str(root / "landmarks.npz"),
            "--run-dir",
            str(root / "lm"),
            "--level-head",
            "--average-from",
            "1",
            *small,
        ]
    )
    export_main(["unet", "--run-dir", str(root / "ap"), "--cache", str(root / "aasce.npz"), "--models", str(models)])
    export_main(["classifier", "--run-dir", str(root / "clf"), "--cache", str(root / "aasce.npz"), "--models", str(models)])
    export_main(["landmarks", "--run-dir", str(root / "lm"), "--cache", str(root / "landmarks.npz"), "--models", str(models)])
    return {"root": root, "aasce": aasce, "models": models}


def test_cache_holds_the_corners_in_the_model_frame(pipeline):
    data = load_landmark_cache(pipeline["root"] / "landmarks.npz")
    assert data["images"].shape[1:] == (64, 32) and data["corners"].shape[1:] == (17, 4, 2)
    centres = data["corners"].mean(axis=2)
    assert (np.diff(centres[..., 1], axis=1) > 0).all()  # T1..L5 top to bottom
    for mask, corners in zip(data["masks"], data["corners"], strict=True):  # each centre on the filled mask
        rows, cols = (
            np.clip(corners.mean(axis=1)[:, 1].astype(int), 0, 63),
            np.clip(corners.mean(axis=1)[:, 0].astype(int), 0, 31),
        )
        assert mask[rows, cols].mean() > 0.8


def test_the_running_mean_of_one_epoch_is_that_epoch(pipeline):
    """--average-from 1 on a one-epoch run: the mean of one epoch's weights is that epoch's (here also the best)."""
    import keras

    from training.landmarks import build_landmark_model

    run = pipeline["root"] / "lm"
    mean, best = (build_landmark_model((64, 32), level_head=True) for _ in range(2))
    mean.load_weights(run / "mean.weights.h5")
    best.load_weights(run / "best.weights.h5")
    for a, b in zip(mean.get_weights(), best.get_weights(), strict=True):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b), atol=1e-6)


def test_training_resumes_where_it_stopped(pipeline):
    run = pipeline["root"] / "lm"
    assert len(json.loads((run / "state.json").read_text())["history"]) == 1
    train_main(
        [
            "landmarks",
            "--cache",
            str(pipeline["root"] / "landmarks.npz"),
            "--run-dir",
            str(run),
            "--epochs",
            "2",
            "--resume",
            "--level-head",
            "--ends-loss-weight",
            "2",
        ]
    )
    history = json.loads((run / "state.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    assert {"val_smape", "val_answered", "val_corner_px"} <= set(history[-1])
    assert json.loads((run / "run_info.json").read_text())["ends_loss_weight"] == 2.0


def test_export_is_in_the_manifest_with_its_figures_and_loads_in_the_registry(pipeline):
    from spine_engine import ModelRegistry

    entry = load_manifest(pipeline["models"]).by_name()[LANDMARK_MODEL_NAME]
    assert entry.kind == "landmarks" and entry.output_shape == [None, 64, 32, N_CHANNELS]
    assert entry.parity_max_abs_diff is not None and entry.parity_max_abs_diff <= 1e-4
    assert "model_frame_val_smape" in entry.metrics
    assert entry.validated is is_validated({k.removeprefix("model_frame_"): v for k, v in entry.metrics.items()})
    registry = ModelRegistry.load(pipeline["models"], providers=["CPUExecutionProvider"])
    model = registry.landmark_model()
    assert model is not None and model.servable, registry.problems
    assert (pipeline["models"] / LANDMARK_MODEL_NAME / "config.pbtxt").exists()  # the Triton config beside it


def test_an_int8_copy_is_calibrated_on_films_and_compared_by_its_decoded_corners(pipeline):
    """`spine-export quantize` on the landmark model: calibrated on letterboxed films (the classifier's masks would
    not even fit its input), checked against fp32 by the vertebrae both decode."""
    export_main(
        ["quantize", "--model", LANDMARK_MODEL_NAME, "--layout", "aasce", "--data", str(pipeline["aasce"]),
         "--models", str(pipeline["models"]), "--calibration-images", "4"]
    )  # fmt: skip
    variant = load_manifest(pipeline["models"]).by_name()[LANDMARK_MODEL_NAME].variants["int8"]
    assert (pipeline["models"] / variant.file).is_file() and variant.file.endswith("model.int8.onnx")
    agreement = variant.agreement
    assert agreement["n_images"] > 0 and np.isfinite(agreement["max_abs_diff"])
    assert 0.0 <= agreement["decoded_both"] <= 1.0 and "mask_dice_vs_fp32_mean" not in agreement


def test_the_validation_rule_both_ways():
    assert is_validated({"val_smape": MAX_VALIDATED_SMAPE - 0.1, "val_answered": 1.0})
    assert not is_validated({"val_smape": MAX_VALIDATED_SMAPE + 0.1, "val_answered": 1.0})
    assert not is_validated({"val_smape": 5.0, "val_answered": 0.99})  # a film without an answer
    assert not is_validated({})
    better = {"val_smape": MAX_VALIDATED_SMAPE + 1, "val_answered": 1.0}
    assert is_validated(better, replaced_smape=MAX_VALIDATED_SMAPE + 5)  # beats the measurement it replaces
    assert not is_validated(better, replaced_smape=MAX_VALIDATED_SMAPE + 0.5)


def test_spine_evaluate_reports_the_served_landmark_path(pipeline, tmp_path):
    out = tmp_path / "eval.json"
    evaluate_main(["aasce", str(pipeline["aasce"]), "--models", str(pipeline["models"]), "--subset", "val", "--json", str(out)])
    report = json.loads(out.read_text())
    assert all(LANDMARK_MODEL_NAME in row["models"] for row in report["per_image"])
    if report["cobb"]["films_measured"]:
        assert {"smape_all_films_pct", "smape_pct", "mae_deg", "max_angle_mae_deg"} <= set(report["cobb"])
        assert {"mean_error_px", "mean_error_vertebra_heights", "level_accuracy", "t1_right", "l5_right"} <= set(
            report["landmarks"]
        )


def test_warped_corners_follow_the_image_and_a_flip_swaps_sides():
    rng = np.random.default_rng(3)
    corners = np.zeros((1, 17, 4, 2))
    corners[0, :, :, 1] = np.arange(17)[:, None] * 20 + np.array([40, 40, 55, 55])
    corners[0, :, :, 0] = np.array([100, 150, 100, 150])
    flip_only = AugmentConfig(max_rotation_deg=0, scale_range=(1, 1), max_shift_frac=0, flip=True)
    params = affine_params(1, 512, 256, flip_only, rng)
    while params[0, 0] > 0:  # draw until the flip is taken
        params = affine_params(1, 512, 256, flip_only, rng)
    warped = warp_corners(corners, params)
    assert (warped[0, :, 0, 0] < warped[0, :, 1, 0]).all()  # TL still left of TR after the mirror
    np.testing.assert_allclose(warped[0, :, 0, 0], 256 - 150)
    np.testing.assert_allclose(warped[0, :, :, 1], corners[0, :, :, 1])


def test_targets_decode_back_to_the_corners(monkeypatch):
    # Offsets are learnt within OFFSET_RADIUS; a trained model answers them on every pixel the decoder's vote reads,
    # so the targets here are drawn a little wider than training draws them, to cover that vote.
    import training.landmarks

    monkeypatch.setattr(training.landmarks, "OFFSET_RADIUS", 3.5)
    corners = np.zeros((1, 17, 4, 2))
    rows = 30 + np.arange(17) * 26.0
    corners[0, :, :, 1] = rows[:, None] + np.array([-9, -9, 9, 9])
    corners[0, :, :, 0] = np.array([110, 146, 110, 146])
    target = make_targets(corners, (512, 256))
    heads = np.zeros((512, 256, N_CHANNELS), np.float32)
    heads[..., :9] = target[0, ..., :9]
    heads[..., LEVEL_CHANNEL] = target[0, ..., 11]
    found = decode(heads)
    assert found is not None and found.detected.all()
    np.testing.assert_allclose(found.corners, corners[0], atol=0.05)


def test_level_targets_name_each_vertebra_and_the_two_beyond():
    corners = np.zeros((1, 17, 4, 2))
    rows = 50 + np.arange(17) * 24.0
    corners[0, :, :, 1] = rows[:, None] + np.array([-8, -8, 8, 8])
    corners[0, :, :, 0] = np.array([110, 146, 110, 146])
    target = make_targets(corners, (512, 256))[0]
    level, weight = target[..., 11], target[..., 12]
    for v, row in enumerate(rows):  # T1 = 1/18 .. L5 = 17/18 at each centre
        assert level[int(row), 128] == pytest.approx((v + 1) / LEVEL_SCALE)
    assert level[int(rows[0] - 24), 128] == 0.0 and weight[int(rows[0] - 24), 128] == 1.0  # C7
    assert level[int(rows[-1] + 24), 128] == pytest.approx(1.0)  # S1
    assert weight.sum() == pytest.approx(19 * weight[int(rows[5]) - 3 : int(rows[5]) + 4, 125:132].sum())
    assert weight[int(rows[0] + 12), 128] == 0.0  # between centres nothing is learnt


def test_the_loss_charges_a_wrong_level_only_to_a_model_with_the_level_head():
    corners = np.zeros((2, 17, 4, 2))
    corners[..., 1] = (50 + np.arange(17) * 24.0)[None, :, None] + np.array([-8, -8, 8, 8])
    corners[..., 0] = np.array([110, 146, 110, 146])
    y_true = np.concatenate([make_targets(corners, (512, 256)), np.zeros((2, 512, 256, 1), np.float32)], axis=-1)
    pred = np.zeros((2, 512, 256, 12), np.float32) + 0.01
    pred[..., LEVEL_CHANNEL] = y_true[..., 11]
    right = float(np.mean(np.asarray(landmark_loss(y_true, pred))))
    pred[..., LEVEL_CHANNEL] += 2 / LEVEL_SCALE  # two vertebrae off everywhere
    wrong = float(np.mean(np.asarray(landmark_loss(y_true, pred))))
    assert wrong - right == pytest.approx(2 * LEVEL_LOSS_WEIGHT, rel=1e-3)
    no_head = float(np.mean(np.asarray(landmark_loss(y_true, pred[..., :LEVEL_CHANNEL]))))
    assert no_head == pytest.approx(right, rel=1e-4)
    heavier_ends = float(np.mean(np.asarray(landmark_loss(y_true, pred, ends_weight=2.0))))
    assert heavier_ends > wrong  # the ends heatmap (0.01 where C7 and S1 peak) costs more at weight 2 than at 0.5
