"""The tilt model: from a crop of one vertebra turned (almost) level, how far it still is from level.

    spine-train tilt ../shared/data/aasce-train --run-dir runs/tilt [--epochs 30] [--time-budget S]

Trained on the AASCE training split (patient-grouped, as every model here): each epoch cuts the 17 vertebrae of
every training film from the original pixels with `spine_core.vertebra_tilt` (the served crops), each one
placed from the labels' corners with the errors a first reading makes added at random (centre moved by a tenth
of the width, width scaled, turned by up to 14 degrees, mirrored half the time), and learns the turn that is
left (L1 loss, in `TILT_SCALE` degrees). Validation: the 90 validation films' vertebrae under one fixed draw of
those errors; the tilt error in degrees before and after. `best.weights.h5` keeps the best epoch; the run
resumes from `last.weights.h5`. Export: `spine-export tilt --run-dir runs/tilt`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from keras import layers

from spine_core.preprocessing import to_grayscale
from spine_core.vertebra_tilt import CROP_HW, CROP_SPAN, MAX_TURN_DEG, TILT_SCALE, cobb_vectors, vertebra_crops
from training.datasets import read_aasce_dataset
from training.splits import aasce_sample_split
from training.train import save_without_optimizer

log = logging.getLogger(__name__)

CENTRE_JITTER = 0.1  # share of the width the crop's centre moves, each axis (sigma)
WIDTH_JITTER = 0.08  # sigma of the log width scale
TURN_SIGMA_DEG = 5.0  # sigma of the first reading's tilt error, clipped at TURN_LIMIT_DEG
TURN_LIMIT_DEG = 14.0
FILTERS = (16, 32, 64, 96)
VAL_DRAW_SEED = 12345  # the one draw of first-reading errors the validation figures are measured on


@dataclass(frozen=True)
class CropShape:
    """What the model reads: its input (rows, columns) and the crop's width in vertebra widths."""

    hw: tuple[int, int] = CROP_HW
    span: float = CROP_SPAN


@dataclass
class TiltFilms:
    """Films (grayscale, 8-bit when the file was) and their labelled corners in pixels."""

    names: list[str]
    pixels: list[np.ndarray]
    corners: list[np.ndarray]  # (17, 4, 2) each


def load_films(data_dir: Path, subset: str) -> TiltFilms:
    samples = read_aasce_dataset(data_dir)
    train_idx, val_idx = aasce_sample_split(samples)
    chosen = [samples[i] for i in (train_idx if subset == "train" else val_idx)]
    names, pixels, corners = [], [], []
    for s in chosen:
        image = s.image()
        gray = image if image.ndim == 2 and image.dtype == np.uint8 else to_grayscale(image)
        h, w = gray.shape
        names.append(s.name)
        pixels.append(gray)
        corners.append(s.corners(h, w))
    return TiltFilms(names, pixels, corners)


def placed_crops(
    gray: np.ndarray, corners: np.ndarray, rng: np.random.Generator, shape: CropShape
) -> tuple[np.ndarray, np.ndarray]:
    """These vertebrae's crops ((k, rows, cols), standardised) placed as a first reading would place them: centre
    moved, width scaled and turned at random; and the turn each one got (radians)."""
    angles, widths, centres = cobb_vectors(corners)
    k = len(angles)
    turn = np.radians(np.clip(rng.normal(0, TURN_SIGMA_DEG, k), -TURN_LIMIT_DEG, TURN_LIMIT_DEG))
    shift = rng.normal(0, CENTRE_JITTER, (k, 2)) * widths[:, None]
    scale = np.exp(rng.normal(0, WIDTH_JITTER, k))
    return vertebra_crops(gray, centres + shift, widths * scale, angles + turn, shape.hw, shape.span), turn


def draw_crops(
    films: TiltFilms, rng: np.random.Generator, augment: bool, shape: CropShape = CropShape()
) -> tuple[np.ndarray, np.ndarray]:
    """Every vertebra of every film, cut as a first reading would place it: (n, rows, cols, 1) crops, (n,) targets."""
    crops, targets = [], []
    for gray, corners in zip(films.pixels, films.corners, strict=True):
        cut, turn = placed_crops(gray, corners, rng, shape)
        k = len(cut)
        left = -turn  # the crop is turned by angle + turn: the vertebra lies at -turn in it
        if augment:
            flip = rng.random(k) < 0.5
            cut[flip] = cut[flip, :, ::-1]
            left = np.where(flip, -left, left)
            cut = _intensity(cut, rng)
        crops.append(cut)
        targets.append(np.degrees(left) / TILT_SCALE)
    return np.concatenate(crops)[..., None], np.concatenate(targets).astype(np.float32)


def _intensity(crops: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random gamma and noise on each standardised crop, standardised again."""
    lo, hi = crops.min(axis=(1, 2), keepdims=True), crops.max(axis=(1, 2), keepdims=True)
    unit = (crops - lo) / np.maximum(hi - lo, 1e-6)
    gamma = np.exp(rng.normal(0, 0.25, (len(crops), 1, 1)))
    out = unit**gamma + rng.normal(0, 0.02, crops.shape)
    out = (out - out.mean(axis=(1, 2), keepdims=True)) / np.maximum(out.std(axis=(1, 2), keepdims=True), 1e-3)
    return out.astype(np.float32)


def build_tilt_model(
    crop_hw: tuple[int, int] = CROP_HW,
    filters: tuple[int, ...] = FILTERS,
    name: str = "vertebra_tilt",
    outputs: int = 1,
    activation: str | None = None,
    output_name: str = "turn",
) -> keras.Model:
    """Four conv blocks (two 3x3 convs, BatchNorm, ReLU, 2x2 max-pool), then a dense head on the 4x4 map: the
    flattened map keeps where the endplates lie, which a global pool would lose. The ends model
    (`training/ends.py`) is the same network with a softmax head (`outputs`, `activation`)."""
    inputs = keras.Input((*crop_hw, 1), name="crops")
    x = inputs
    for width in filters:
        for _ in range(2):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dropout(0.3)(x)
    answer = layers.Dense(outputs, activation=activation, name=output_name)(x)
    return keras.Model(inputs, answer, name=name)


def mean_of(models: list[keras.Model], output_name: str = "turn", name: str = "vertebra_tilt_mean") -> keras.Model:
    """One graph answering the mean of several tilt models' answers (runs of the same crop, other seeds): their
    errors are partly independent, so the mean is steadier than any one."""
    if len(models) == 1:
        return models[0]
    inputs = keras.Input(models[0].input_shape[1:], name="crops")
    outputs = layers.Average(name=output_name)([m(inputs) for m in models])
    return keras.Model(inputs, outputs, name=name)


def tilt_errors(model: keras.Model, crops: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Tilt error (degrees) of the crops' placement before and after the model's turn."""
    answer = np.clip(model.predict(crops, batch_size=256, verbose=0).reshape(-1) * TILT_SCALE, -MAX_TURN_DEG, MAX_TURN_DEG)
    truth = targets * TILT_SCALE
    return {
        "val_tilt_mae_before": float(np.mean(np.abs(truth))),
        "val_tilt_mae": float(np.mean(np.abs(truth - answer))),
        "val_tilt_median": float(np.median(np.abs(truth - answer))),
    }


def train_tilt(
    data_dir: Path,
    run_dir: Path,
    epochs: int = 30,
    lr: float = 1e-3,
    batch_size: int = 64,
    time_budget: float = 0,
    seed: int = 0,
    shape: CropShape = CropShape(),
    filters: tuple[int, ...] = FILTERS,
) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    train, val = load_films(data_dir, "train"), load_films(data_dir, "val")
    val_crops, val_targets = draw_crops(val, np.random.default_rng(VAL_DRAW_SEED), augment=False, shape=shape)
    model = build_tilt_model(shape.hw, filters)
    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=epochs * (len(train.names) * 17 // batch_size + 1))
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="mean_absolute_error")
    return fit_epochs(
        model,
        run_dir,
        EpochPlan(epochs, batch_size, seed, time_budget, "val_tilt_mae", "tilt"),
        lambda rng: draw_crops(train, rng, augment=True, shape=shape),
        lambda: tilt_errors(model, val_crops, val_targets),
    )


@dataclass(frozen=True)
class EpochPlan:
    """How a crop model's run goes: its length, batch, seed, time budget, and the validation figure (lower is
    better) that decides which epoch `best.weights.h5` keeps."""

    epochs: int
    batch_size: int
    seed: int
    time_budget: float
    best_by: str
    name: str


def fit_epochs(
    model: keras.Model,
    run_dir: Path,
    plan: EpochPlan,
    draw: Callable[[np.random.Generator], tuple[np.ndarray, np.ndarray]],
    validate: Callable[[], dict[str, float]],
) -> dict:
    """A compiled crop model's run, resumable: each epoch draws fresh crops, fits once over them, validates, keeps
    `best.weights.h5` by `plan.best_by` and `last.weights.h5`, and records every epoch's figures in `state.json`."""
    state_path = run_dir / "state.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {"epoch": 0, "best": None, "history": []}
    if state["epoch"] and (run_dir / "last.weights.h5").exists():
        model.load_weights(run_dir / "last.weights.h5")
    started = time.perf_counter()
    rng = np.random.default_rng(plan.seed + state["epoch"])
    for epoch in range(state["epoch"] + 1, plan.epochs + 1):
        t0 = time.perf_counter()
        crops, targets = draw(rng)
        fitted = model.fit(crops, targets, batch_size=plan.batch_size, epochs=1, shuffle=True, verbose=0)
        metrics = {"epoch": epoch, "loss": float(fitted.history["loss"][-1]), **validate()}
        metrics["seconds"] = round(time.perf_counter() - t0, 1)
        state["history"].append(metrics)
        if state["best"] is None or metrics[plan.best_by] < state["best"][plan.best_by]:
            state["best"] = metrics
            save_without_optimizer(model, run_dir / "best.weights.h5")
        model.save_weights(run_dir / "last.weights.h5")
        state["epoch"] = epoch
        state_path.write_text(json.dumps(state, indent=1))
        figures = " ".join(f"{k.removeprefix('val_')} {v:.3f}" for k, v in metrics.items() if k.startswith("val_"))
        log.info("%s epoch %d loss %.4f val: %s %.0fs", plan.name, epoch, metrics["loss"], figures, metrics["seconds"])
        if plan.time_budget and time.perf_counter() - started > plan.time_budget - 1.5 * metrics["seconds"]:
            log.info("time budget reached after epoch %d", epoch)
            break
    return state
