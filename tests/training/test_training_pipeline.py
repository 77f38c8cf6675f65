"""End to end on synthetic data: cache -> one-epoch training -> ONNX export with parity -> manifest -> evaluation CLI.

Runs TensorFlow on the CPU; tiny models (64x32 U-Net) keep it to about a minute.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the train extra (tensorflow, tf2onnx) is not installed")

from spine_core.manifest import load_manifest, sha256_file
from training.cache import load_aasce_cache
from training.cli import train_main
from training.datasets import read_aasce_dataset, write_synthetic_aasce_dataset, write_synthetic_course_dataset
from training.evaluate import main as evaluate_main
from training.export_cli import export_main
from training.splits import aasce_sample_split, aasce_split

# `slow` (TensorFlow), by path: tests/conftest.py


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pipeline")
    aasce = write_synthetic_aasce_dataset(root / "aasce", n_patients=6, size=(192, 80))
    course = write_synthetic_course_dataset(root / "course", size=(96, 48))
    models = root / "models"
    train_main(["cache", "aasce", str(aasce), str(root / "aasce.npz"), "--height", "64", "--width", "32"])
    train_main(["cache", "course", str(course), str(root / "course.npz"), "--height", "64", "--width", "32"])
    small = ["--epochs", "1", "--batch-size", "4", "--filters", "4", "--num-layers", "2"]
    train_main(
        ["unet", "--cache", str(root / "aasce.npz"), "--structure", "Ap_Vertebra", "--run-dir", str(root / "runs/ap"), *small]
    )
    train_main(
        [
            "unet",
            "--cache",
            str(root / "course.npz"),
            "--structure",
            "Lat_Vertebra",
            "--run-dir",
            str(root / "runs/lat"),
            "--repeat",
            "2",
            *small,
        ]
    )
    train_main(
        [
            "classifier",
            "--cache",
            str(root / "aasce.npz"),
            "--run-dir",
            str(root / "runs/clf"),
            "--epochs",
            "1",
            "--batch-size",
            "4",
        ]
    )
    export_main(["unet", "--run-dir", str(root / "runs/ap"), "--cache", str(root / "aasce.npz"), "--models", str(models)])
    export_main(
        [
            "unet",
            "--run-dir",
            str(root / "runs/lat"),
            "--cache",
            str(root / "course.npz"),
            "--models",
            str(models),
            "--recalibrate-bn",
            "3",
        ]
    )
    export_main(["classifier", "--run-dir", str(root / "runs/clf"), "--cache", str(root / "aasce.npz"), "--models", str(models)])
    return {"root": root, "aasce": aasce, "course": course, "models": models}


def test_one_epoch_training_writes_checkpoints_curves_and_resumable_state(pipeline):
    run = pipeline["root"] / "runs/ap"
    for name in ("best.weights.h5", "last.weights.h5", "state.json", "curves.png", "run_info.json"):
        assert (run / name).is_file(), name
    state = json.loads((run / "state.json").read_text())
    assert state["epoch"] == 0 and len(state["history"]) == 1
    assert 0.0 <= state["history"][0]["val_dice"] <= 1.0
    first_seconds = state["seconds"]
    assert first_seconds > 0
    # Resuming with a larger epoch budget continues at epoch 2 instead of starting over.
    train_main(
        [
            "unet",
            "--cache",
            str(pipeline["root"] / "aasce.npz"),
            "--structure",
            "Ap_Vertebra",
            "--run-dir",
            str(run),
            "--epochs",
            "2",
            "--batch-size",
            "4",
            "--filters",
            "4",
            "--num-layers",
            "2",
        ]
    )
    state = json.loads((run / "state.json").read_text())
    assert state["epoch"] == 1 and [h["epoch"] for h in state["history"]] == [1, 2]
    # The training time reported is the total over both invocations, not the resumed part alone.
    assert state["seconds"] > first_seconds
    assert json.loads((run / "run_info.json").read_text())["training_time_s"] >= round(first_seconds, 1)


def test_manifest_round_trip_matches_files(pipeline):
    manifest = load_manifest(pipeline["models"])
    names = {m.name for m in manifest.models}
    assert names == {"Ap_Vertebra", "Lat_Vertebra", "Mask_Classifier"}
    for entry in manifest.models:
        path = pipeline["models"] / entry.file
        assert entry.file == f"{entry.name}/1/model.onnx"
        assert sha256_file(path) == entry.sha256
        assert entry.parity_max_abs_diff is not None and entry.parity_max_abs_diff <= 1e-4
        assert (pipeline["models"] / entry.name / "config.pbtxt").is_file()
    by_name = manifest.by_name()
    assert by_name["Ap_Vertebra"].validated is True and by_name["Ap_Vertebra"].input_shape == [None, 64, 32, 1]
    assert by_name["Lat_Vertebra"].validated is False and "DEMONSTRATION" in by_name["Lat_Vertebra"].notes
    assert by_name["Mask_Classifier"].output_shape == [None, 2]
    reloaded = type(manifest).model_validate_json(manifest.model_dump_json())
    assert reloaded == manifest


def test_export_has_dynamic_batch_and_stable_names(pipeline):
    import onnxruntime as ort

    entry = load_manifest(pipeline["models"]).by_name()["Ap_Vertebra"]
    session = ort.InferenceSession(str(pipeline["models"] / entry.file), providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("image", "mask")
    for batch in (1, 3):
        y = session.run(None, {"image": np.random.default_rng(0).random((batch, 64, 32, 1), dtype=np.float32)})[0]
        assert y.shape == (batch, 64, 32, 1) and y.min() >= 0.0 and y.max() <= 1.0


def test_parity_check_refuses_a_wrong_export(pipeline, monkeypatch):
    import training.export as export

    monkeypatch.setattr(export, "parity", lambda *a, **k: 0.5)
    with pytest.raises(export.ParityError):
        export.export_unet(pipeline["root"] / "runs/ap", pipeline["root"] / "aasce.npz", pipeline["root"] / "refused")
    assert not (pipeline["root"] / "refused" / "Ap_Vertebra" / "1" / "model.onnx").exists()


def test_evaluate_aasce_cli_contract(pipeline, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert evaluate_main(["aasce", str(pipeline["aasce"]), "--models", str(pipeline["models"]), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["n_images"] == 9
    seg = result["segmentation"]["Ap_Vertebra"]
    assert 0.0 <= seg["dice_median"] <= 1.0 and 0.0 <= seg["dice_mean"] <= 1.0
    cls = result["classification"]
    assert cls["threshold_deg"] == 40.0 and 0.0 <= cls["accuracy"] <= 1.0
    assert np.isnan(cls["auc"]) or 0.0 <= cls["auc"] <= 1.0
    assert len(result["per_image"]) == 9
    # Measurement figures of what the endpoint measured (issue 14's names); none on films with no angle.
    assert result["cobb"]["films"] == 9 and 0 <= result["cobb"]["films_measured"] <= 9
    if result["cobb"]["films_measured"]:
        assert {"smape_pct", "mae_deg", "max_angle_mae_deg"} <= set(result["cobb"]) and "mean_error_px" in result["landmarks"]
    # A film the spine check refuses gets no label (as /classify answers 422): counted apart, not scored.
    labelled = [r for r in result["per_image"] if "refused" not in r]
    assert len(labelled) + result["refused"]["n"] == 9 and cls["n"] == len(labelled) > 0
    # The cut-off figures agree with the per-image labels and scores written beside them.
    damaged = np.array([r["max_cobb"] >= cls["threshold_deg"] for r in labelled])
    flagged = np.array([r["label"] == "Damaged" for r in labelled])
    assert (flagged == np.array([r["p_damaged"] >= cls["decision_threshold"] for r in labelled])).all()
    assert cls["decision_threshold"] == 0.5 and cls["accuracy"] == pytest.approx(np.mean(flagged == damaged))
    for key, subset, expected in (("sensitivity", damaged, True), ("specificity", ~damaged, False)):
        if subset.any():
            assert cls[key] == pytest.approx(np.mean(flagged[subset] == expected))
        else:
            assert np.isnan(cls[key])
    val = tmp_path / "val.json"
    evaluate_main(["aasce", str(pipeline["aasce"]), "--models", str(pipeline["models"]), "--json", str(val), "--subset", "val"])
    assert 0 < json.loads(val.read_text())["n_images"] < 9


def test_evaluation_holds_out_the_images_training_held_out(pipeline):
    """spine-evaluate and the analysis scripts split the dataset; training split its cache: the same images."""
    samples = read_aasce_dataset(pipeline["aasce"])
    train_idx, val_idx = aasce_sample_split(samples)
    assert val_idx and train_idx
    assert (train_idx, val_idx) == tuple(aasce_split(load_aasce_cache(pipeline["root"] / "aasce.npz")))


def test_evaluate_course_cli(pipeline, tmp_path):
    out = tmp_path / "course.json"
    assert evaluate_main(["course", str(pipeline["course"]), "--models", str(pipeline["models"]), "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["segmentation"]) == {"Ap_Vertebra", "Lat_Vertebra"}
    assert result["segmentation"]["Lat_Vertebra"]["n"] == 4
    assert set(result["classification"]["study_accuracy"]) == {"max_score", "mean"}
    assert result["n_studies"] == 4


def test_quantize_cli_adds_checked_int8_variants(pipeline, tmp_path):
    import shutil

    import onnx

    models = tmp_path / "models"
    shutil.copytree(pipeline["models"], models)
    common = ["--models", str(models)]
    export_main(["quantize", *common, "--model", "Ap_Vertebra", "--layout", "aasce", "--data", str(pipeline["aasce"])])
    study = "Damaged/" + sorted(p.name for p in (pipeline["course"] / "Damaged").iterdir())[0]
    export_main(
        ["quantize", *common, "--model", "Lat_Vertebra", "--layout", "course", "--data", str(pipeline["course"]),
         "--holdout-study", study]
    )  # fmt: skip
    manifest = load_manifest(models)
    ap = manifest.by_name()["Ap_Vertebra"]
    variant = ap.variants["int8"]
    assert variant.file == "Ap_Vertebra/1/model.int8.onnx" and sha256_file(models / variant.file) == variant.sha256
    assert sha256_file(models / ap.file) == ap.sha256  # the fp32 file is untouched
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(models / variant.file)).graph.node}
    # calibrated on the training split, checked on the validation split
    assert "training split" in variant.calibration_data
    assert 0 < variant.agreement["n_images"] < 9
    assert 0.0 <= variant.agreement["mask_dice_vs_fp32_min"] <= variant.agreement["mask_dice_vs_fp32_mean"] <= 1.0
    lat = manifest.by_name()["Lat_Vertebra"].variants["int8"]
    assert lat.agreement["n_images"] == 1 and study in lat.calibration_data  # the held-out study's LAT image
    assert manifest.by_name()["Mask_Classifier"].variants == {}

    out = tmp_path / "eval_int8.json"
    args = ["aasce", str(pipeline["aasce"]), "--models", str(models), "--json", str(out), "--precision", "int8"]
    assert evaluate_main(args) == 0
    result = json.loads(out.read_text())
    assert result["precision"] == {"Ap_Vertebra": "int8", "Lat_Vertebra": "int8", "Mask_Classifier": "fp32"}
    assert 0.0 <= result["segmentation"]["Ap_Vertebra"]["dice_mean"] <= 1.0

    export_main(
        ["annotate", *common, "--model", "Ap_Vertebra", "--variant", "int8", "--eval-json", str(out),
         "--keys", "segmentation.Ap_Vertebra.dice_mean=val_dice_mean"]
    )  # fmt: skip
    annotated = load_manifest(models).by_name()["Ap_Vertebra"]
    assert annotated.variants["int8"].metrics["val_dice_mean"] == result["segmentation"]["Ap_Vertebra"]["dice_mean"]
    assert annotated.metrics == ap.metrics  # the fp32 figures stay as they were


def test_second_stage_trains_on_first_stage_windows_and_is_served(pipeline, tmp_path):
    import shutil

    models = tmp_path / "models"
    shutil.copytree(pipeline["models"], models)
    refine_cache = tmp_path / "refine.npz"
    train_main(
        ["cache", "aasce-refine", str(pipeline["aasce"]), str(refine_cache), "--height", "128", "--width", "32",
         "--stage1-models", str(models)]
    )  # fmt: skip
    with np.load(refine_cache) as z:
        assert z["images"].shape == (9, 128, 32) and z["boxes"].shape == (9, 6)
        assert str(z["stage1_sha256"]) == load_manifest(models).by_name()["Ap_Vertebra"].sha256
    run = tmp_path / "runs/refine"
    train_main(
        ["unet", "--cache", str(refine_cache), "--structure", "Ap_Vertebra", "--run-dir", str(run), "--epochs", "1",
         "--batch-size", "4", "--filters", "4", "--num-layers", "2", "--crop", "64", "32"]
    )  # fmt: skip
    info = json.loads((run / "run_info.json").read_text())
    assert info["kind"] == "refinement" and info["refines"] == "Ap_Vertebra" and info["input_hw"] == [128, 32]
    export_main(
        ["unet", "--run-dir", str(run), "--cache", str(refine_cache), "--models", str(models), "--combine", "mean"]
    )  # fmt: skip
    entry = load_manifest(models).by_name()["Ap_Vertebra_refine"]
    assert entry.kind == "refinement" and entry.refines == "Ap_Vertebra" and entry.structure == "Ap_Vertebra"
    assert entry.combine == "mean"
    assert entry.input_shape == [None, 128, 32, 1] and entry.preprocessing["name"] == "spine-crop-percentile-v1"
    assert entry.parity_max_abs_diff is not None and entry.parity_max_abs_diff <= 1e-4
    assert "refinement, Ap_Vertebra" in (models / "Ap_Vertebra_refine/config.pbtxt").read_text()

    two_stage, one_stage = tmp_path / "two.json", tmp_path / "one.json"
    common = ["aasce", str(pipeline["aasce"]), "--models", str(models)]
    assert evaluate_main([*common, "--json", str(two_stage), "--refinement"]) == 0
    assert evaluate_main([*common, "--json", str(one_stage)]) == 0  # refinement is opt-in
    refined, plain = json.loads(two_stage.read_text()), json.loads(one_stage.read_text())
    assert refined["refinement"]["model"] == "Ap_Vertebra_refine"
    assert refined["refinement"]["images_refined"] + sum(r["models"] == ["Ap_Vertebra"] for r in refined["per_image"]) == 9
    assert plain["refinement"] == {"model": None, "images_refined": 0}
    assert all(r["models"] == ["Ap_Vertebra"] for r in plain["per_image"])
