"""Export the tilt model (ONNX, parity-checked) into the manifest; `validated` decided by the served figures.

    spine-export tilt --run-dir runs/tilt [runs/tilt_s1 ...] --data ../shared/data/aasce-train \
        [--eval-json WITH.json --compare-eval WITHOUT.json]

Several runs (the same crop, other seeds) are exported as one graph answering the mean of their answers.

The rule (`is_validated`): two `spine-evaluate aasce --subset val` runs of the service, with this model
(`--eval-json`) and without it (`--compare-eval`, SPINE_TILT_MODEL=false): served, it must lower the SMAPE over
all validation films and not raise the largest angle's MAE. Without both files the entry is written with
`validated: false` (a first export, so that the service can be evaluated with it).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from spine_core.manifest import ModelEntry, sha256_file, upsert_model
from spine_core.structures import TILT_MODEL_NAME
from spine_core.vertebra_tilt import TILT_SCALE
from training.export import OPSET, _export_and_check, _now
from training.tilt import VAL_DRAW_SEED, CropShape, build_tilt_model, draw_crops, load_films, mean_of, tilt_errors

TILT_INPUT_NAME, TILT_OUTPUT_NAME = "crops", "turn"


def served_figures(evaluation: dict) -> dict[str, float]:
    cobb = evaluation["cobb"]
    return {"smape_all_films_pct": cobb["smape_all_films_pct"], "max_angle_mae_deg": cobb["max_angle_mae_deg"]}


def is_validated(with_model: dict | None, without: dict | None) -> bool:
    if with_model is None or without is None:
        return False
    a, b = served_figures(with_model), served_figures(without)
    return a["smape_all_films_pct"] < b["smape_all_films_pct"] and a["max_angle_mae_deg"] <= b["max_angle_mae_deg"]


def load_runs(run_dirs: list[Path], name: str, **head) -> tuple[list[dict], CropShape, list]:
    """The crop-model runs to export as one mean: their run_info, the crop they all read, and each run's best
    weights in a network of its own filters (`head`: the output's size, activation and name, as build_tilt_model)."""
    infos = [json.loads((run_dir / "run_info.json").read_text()) for run_dir in run_dirs]
    shape = CropShape(tuple(infos[0]["crop_hw"]), float(infos[0]["crop_span"]))
    if any((i["crop_hw"], i["crop_span"]) != (infos[0]["crop_hw"], infos[0]["crop_span"]) for i in infos):
        raise ValueError("runs exported as one mean must read the same crop (crop_hw, crop_span)")
    members = []
    for k, (run_dir, info) in enumerate(zip(run_dirs, infos, strict=True)):
        member = build_tilt_model(shape.hw, tuple(info["filters"]), name=f"{name}_{k}", **head)
        member.load_weights(run_dir / "best.weights.h5")
        members.append(member)
    return infos, shape, members


def crop_model_fields(
    model, onnx_path: Path, models_dir: Path, shape: CropShape, infos: list[dict], run_dirs: list[Path]
) -> dict:
    """What the manifest says of any crop model (tilt, ends) exported from these runs: its file, input, size and
    provenance."""
    return {
        "file": str(onnx_path.relative_to(models_dir)),
        "sha256": sha256_file(onnx_path),
        "input_shape": [None, *shape.hw, 1],
        "architecture_config": {
            "builder": "training.tilt.build_tilt_model",
            "crop_hw": list(shape.hw),
            "filters": [i["filters"] for i in infos],
            "runs": [str(d) for d in run_dirs],
        },
        "parameters": int(model.count_params()),
        "opset": OPSET,
        "training_data": infos[0]["training_data"],
        "split": infos[0]["split"],
        "epochs": sum(i["epochs"] for i in infos),
        "training_time_s": sum(i.get("training_time_s") or 0.0 for i in infos),
        "trained_on": infos[0].get("trained_on"),
    }


def export_tilt(
    run_dirs: list[Path], data_dir: Path, models_dir: Path, with_model: dict | None = None, without: dict | None = None
) -> ModelEntry:
    infos, shape, members = load_runs(run_dirs, "vertebra_tilt")
    model = mean_of(members)
    # The runs' own validation draw: the parity inputs and the figures of the mean.
    val_crops, val_targets = draw_crops(load_films(data_dir, "val"), np.random.default_rng(VAL_DRAW_SEED), False, shape)
    onnx_path, diff = _export_and_check(model, models_dir, TILT_MODEL_NAME, val_crops[:64], TILT_INPUT_NAME, TILT_OUTPUT_NAME)
    metrics = {f"crops_{k}": v for k, v in tilt_errors(model, val_crops, val_targets).items()}
    if len(infos) > 1:
        metrics["crops_val_tilt_mae_of_each_run"] = [i["metrics"]["val_tilt_mae"] for i in infos]
    if with_model is not None and without is not None:
        metrics.update({f"served_val_{k}": v for k, v in served_figures(with_model).items()})
        metrics.update({f"served_val_{k}_without": v for k, v in served_figures(without).items()})
    validated = is_validated(with_model, without)
    entry = ModelEntry(
        name=TILT_MODEL_NAME,
        kind="tilt",
        structure="Ap_Vertebra",
        view="AP",
        input_name=TILT_INPUT_NAME,
        output_name=TILT_OUTPUT_NAME,
        output_shape=[None, 1],
        preprocessing={
            "crop": "spine_core.vertebra_tilt.crops_for: each vertebra turned level by its read tilt, the crop "
            "crop_span of its width wide, sampled at twice the input size and averaged 2x2, standardised",
            "crop_span": shape.span,
            "output": f"the vertebra's remaining tilt in the crop, {TILT_SCALE} degrees per unit",
        },
        architecture="CNN: four blocks of two 3x3 convs (BatchNorm, ReLU) and 2x2 max-pooling, dense head"
        + (f"; the mean of {len(members)} such networks (runs with other seeds)" if len(members) > 1 else ""),
        metrics=metrics,
        parity_max_abs_diff=diff,
        validated=validated,
        **crop_model_fields(model, onnx_path, models_dir, shape, infos, run_dirs),
        notes=(
            f"Trained from random weights on this project's AASCE training split: {len(infos)} run(s) (seeds "
            f"{', '.join(str(i.get('seed', 0)) for i in infos)}), best epochs {', '.join(str(i['best_epoch']) for i in infos)}"
            f"{', their answers averaged in one graph' if len(infos) > 1 else ''}. "
            f"validated: {validated} by the rule in training/tilt_export.py (served with it, the validation films' "
            "SMAPE over all films lower and the largest angle's MAE no higher than without it)."
        ),
    )
    upsert_model(models_dir, entry, _now())
    return entry
