"""Export the ends model (ONNX, parity-checked) into the manifest; `validated` decided by the served figures.

    spine-export ends --run-dir runs/ends [runs/ends_s1 ...] --data ../shared/data/aasce-train \
        [--eval-json WITH.json --compare-eval WITHOUT.json]

The rule (`is_validated`): two `spine-evaluate aasce --subset val` runs of the service, with this model
(`--eval-json`) and without it (`--compare-eval`, SPINE_ENDS_MODEL=false): served, it must raise the level
accuracy and not raise the SMAPE over all validation films. Without both files the entry is written with
`validated: false` (a first export, so that the service can be evaluated with it). Several runs of the same crop
export as one graph answering the mean of their probabilities.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from spine_core.manifest import ModelEntry, upsert_model
from spine_core.structures import ENDS_MODEL_NAME
from spine_core.vertebra_ends import ENDS_CLASSES
from training.ends import draw_crops, end_figures
from training.export import _export_and_check, _now
from training.tilt import VAL_DRAW_SEED, load_films, mean_of
from training.tilt_export import crop_model_fields, load_runs

ENDS_INPUT_NAME, ENDS_OUTPUT_NAME = "crops", "ends"


def served_figures(evaluation: dict) -> dict[str, float]:
    cobb, levels = evaluation["cobb"], evaluation["landmarks"]
    return {"smape_all_films_pct": cobb["smape_all_films_pct"], "level_accuracy": levels["level_accuracy"]}


def is_validated(with_model: dict | None, without: dict | None) -> bool:
    if with_model is None or without is None:
        return False
    a, b = served_figures(with_model), served_figures(without)
    return a["level_accuracy"] > b["level_accuracy"] and a["smape_all_films_pct"] <= b["smape_all_films_pct"]


def _origin(infos: list[dict]) -> str:
    """Where the runs' weights came from, for the manifest's notes."""
    starts = [i["initialised_from"] for i in infos if i.get("initialised_from")]
    origin = f"Fine-tuned from {', '.join(starts)}" if starts else "Trained from random weights"
    films = {name for i in infos for name in i.get("full_body_films", [])}
    more = f" and the chain bodies of {len(films)} hand-marked full-body films (training.ends_full_body)" if films else ""
    return f"{origin} on this project's AASCE training split{more}"


def export_ends(
    run_dirs: list[Path], data_dir: Path, models_dir: Path, with_model: dict | None = None, without: dict | None = None
) -> ModelEntry:
    infos, shape, members = load_runs(
        run_dirs, "vertebra_ends", outputs=len(ENDS_CLASSES), activation="softmax", output_name=ENDS_OUTPUT_NAME
    )
    model = mean_of(members, ENDS_OUTPUT_NAME, "vertebra_ends_mean")
    # The run's own validation draw: the parity inputs and the crop figures.
    crops, classes, levels = draw_crops(load_films(data_dir, "val"), np.random.default_rng(VAL_DRAW_SEED), False, shape=shape)
    onnx_path, diff = _export_and_check(model, models_dir, ENDS_MODEL_NAME, crops[:64], ENDS_INPUT_NAME, ENDS_OUTPUT_NAME)
    probs = model.predict(crops, batch_size=256, verbose=0)
    metrics: dict = {f"crops_{k}": v for k, v in end_figures(probs, classes, levels).items()}
    if len(infos) > 1:
        metrics["crops_val_loss_of_each_run"] = [i["metrics"]["val_loss"] for i in infos]
    if with_model is not None and without is not None:
        metrics.update({f"served_val_{k}": v for k, v in served_figures(with_model).items()})
        metrics.update({f"served_val_{k}_without": v for k, v in served_figures(without).items()})
    validated = is_validated(with_model, without)
    entry = ModelEntry(
        name=ENDS_MODEL_NAME,
        kind="ends",
        structure="Ap_Vertebra",
        view="AP",
        input_name=ENDS_INPUT_NAME,
        output_name=ENDS_OUTPUT_NAME,
        output_shape=[None, len(ENDS_CLASSES)],
        classes=list(ENDS_CLASSES),
        preprocessing={
            "crop": "spine_core.vertebra_ends.ends_crops: each chain vertebra turned level by its read tilt, the crop "
            "crop_span of its width wide, sampled at twice the input size and averaged 2x2, standardised",
            "crop_span": shape.span,
            "output": f"probabilities of {', '.join(ENDS_CLASSES)}",
        },
        architecture="CNN: four blocks of two 3x3 convs (BatchNorm, ReLU) and 2x2 max-pooling, dense softmax head"
        + (f"; the mean of {len(members)} such networks (runs with other seeds)" if len(members) > 1 else ""),
        metrics=metrics,
        parity_max_abs_diff=diff,
        validated=validated,
        **crop_model_fields(model, onnx_path, models_dir, shape, infos, run_dirs),
        notes=(
            f"{_origin(infos)}: {len(infos)} run(s) (seeds "
            f"{', '.join(str(i.get('seed', 0)) for i in infos)}), best epochs {', '.join(str(i['best_epoch']) for i in infos)}"
            f"{', their probabilities averaged in one graph' if len(infos) > 1 else ''}. validated: {validated} by the "
            "rule in training/ends_export.py (served with it, the validation films' level accuracy higher and their "
            "SMAPE over all films no higher than without it)."
        ),
    )
    upsert_model(models_dir, entry, _now())
    return entry
