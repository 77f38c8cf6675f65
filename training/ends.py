"""The ends model: from a crop around one vertebra of the chain, whether it is C7, T1, T2, L4, L5, S1 or another.

    spine-train ends ../shared/data/aasce-train --run-dir runs/ends [--epochs 30] [--time-budget S]

Trained on the AASCE training split (patient-grouped, as every model here). Each epoch cuts, from every training
film's original pixels with `spine_core.vertebra_ends` (the served crops), the vertebrae at the ends of T1..L5 and
beyond them (C6, C7 and S1, S2: the labels' T1 and L5 moved on by their own step) and two from the middle, each
placed as a chain peak would be (the tilt model's first-reading errors, `training.tilt.placed_crops`), and
learns the class (cross-entropy).

AASCE films are cropped close to T1 and L5, so a crop beyond them often runs off the film (the sampler repeats the
edge row); on a full-body film it does not. Any class's crop gets such an edge at random (`EDGE_CHANCE`) so that an
edge says nothing about the level. Validation: the 90 validation films under one fixed draw; besides the class
accuracy, how often the crop the model likes best for T1 among the labels' C6..T3 is T1 (and L5 among L3..S2).
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from spine_core.vertebra_ends import ENDS_CLASSES, ENDS_CROP_HW, ENDS_SPAN, ends_class
from training.ends_full_body import LabelledBodies
from training.tilt import (
    VAL_DRAW_SEED,
    CropShape,
    EpochPlan,
    TiltFilms,
    _intensity,
    build_tilt_model,
    fit_epochs,
    load_films,
    placed_crops,
)

END_LEVELS = np.array([-2, -1, 0, 1, 2, 14, 15, 16, 17, 18])  # C6..T3 and L3..S2, every film
MIDDLE_PER_FILM = 2  # more, drawn from T4..L2
EDGE_CHANCE = 0.4  # share of crops given a film edge (rows beyond it repeat the edge row)
MAX_EDGE_SHARE = 0.6  # the most of a crop's rows an edge may cut off
FILTERS = (16, 32, 64, 96)
FULL_BODY_DRAWS = 3  # each full-body film's labelled bodies are cut this many times an epoch (45 films beside 391)
ENDS_SHAPE = CropShape(ENDS_CROP_HW, ENDS_SPAN)


def extended_corners(corners: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Corners at any level: T1..L5 are the labels', beyond them the end vertebra moved on by its own step."""
    centres = corners.mean(axis=1)
    up, down = centres[0] - centres[1], centres[16] - centres[15]
    out = []
    for level in levels:
        if level < 0:
            out.append(corners[0] + up * (-level))
        elif level > 16:
            out.append(corners[16] + down * (level - 16))
        else:
            out.append(corners[level])
    return np.stack(out)


def _edges(crops: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Some crops cut by a film edge above or below: the rows beyond it repeat the edge row (the sampler's way)."""
    rows = crops.shape[1]
    for i in np.nonzero(rng.random(len(crops)) < EDGE_CHANCE)[0]:
        cut = int(rng.integers(1, int(MAX_EDGE_SHARE * rows) + 1))
        if rng.random() < 0.5:
            crops[i, :cut] = crops[i, cut]
        else:
            crops[i, rows - cut :] = crops[i, rows - cut - 1]
    return crops


def _augmented(cut: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    flip = rng.random(len(cut)) < 0.5
    cut[flip] = cut[flip, :, ::-1]
    return _edges(_intensity(cut, rng), rng)


def full_body_crops(
    bodies: LabelledBodies, rng: np.random.Generator, shape: CropShape = ENDS_SHAPE
) -> tuple[np.ndarray, np.ndarray]:
    """The full-body films' labelled bodies, each cut FULL_BODY_DRAWS times as a first reading would place it,
    augmented: (n, rows, cols, 1) crops, (n,) class indices."""
    crops, classes = [], []
    for _ in range(FULL_BODY_DRAWS):
        for gray, corners, labels in zip(bodies.pixels, bodies.corners, bodies.classes, strict=True):
            crops.append(_augmented(placed_crops(gray, corners, rng, shape)[0], rng))
            classes.append(labels)
    return np.concatenate(crops)[..., None], np.concatenate(classes)


def draw_crops(
    films: TiltFilms,
    rng: np.random.Generator,
    augment: bool,
    middle: int = MIDDLE_PER_FILM,
    shape: CropShape = ENDS_SHAPE,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, rows, cols, 1) crops, (n,) class indices, (n,) levels (T1 = 0) of the chosen vertebrae of every film."""
    crops, classes, all_levels = [], [], []
    for gray, corners in zip(films.pixels, films.corners, strict=True):
        levels = np.concatenate([END_LEVELS, rng.choice(np.arange(3, 14), middle, replace=False)])
        cut, _ = placed_crops(gray, extended_corners(corners, levels), rng, shape)
        if augment:
            cut = _augmented(cut, rng)
        crops.append(cut)
        classes.append(ends_class(levels))
        all_levels.append(levels)
    return np.concatenate(crops)[..., None], np.concatenate(classes), np.concatenate(all_levels)


def end_figures(probs: np.ndarray, classes: np.ndarray, levels: np.ndarray) -> dict[str, float]:
    """Class accuracy, and per film how often T1 (L5) is the crop among C6..T3 (L3..S2) the model likes best."""
    figures = {"val_accuracy": float(np.mean(probs.argmax(axis=1) == classes))}
    per_film = len(END_LEVELS) + MIDDLE_PER_FILM
    films = probs.reshape(-1, per_film, len(ENDS_CLASSES))
    film_levels = levels.reshape(-1, per_film)
    for name, level, window in (("t1", 0, slice(0, 5)), ("l5", 16, slice(5, 10))):
        picked = films[:, window, ENDS_CLASSES.index(name.upper())].argmax(axis=1)
        figures[f"val_{name}_pick"] = float(np.mean(film_levels[:, window][np.arange(len(films)), picked] == level))
    return figures


def train_ends(
    data_dir: Path,
    run_dir: Path,
    epochs: int = 30,
    lr: float = 1e-3,
    batch_size: int = 64,
    time_budget: float = 0,
    seed: int = 0,
    filters: tuple[int, ...] = FILTERS,
    shape: CropShape = ENDS_SHAPE,
    full_body: LabelledBodies | None = None,
    init_weights: Path | None = None,
) -> dict:
    """A run from random weights, or from `init_weights` (another run's best: a fine-tuning), on the AASCE
    training films and, when given, the full-body films' labelled bodies (`training.ends_full_body`)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(seed)
    train, val = load_films(data_dir, "train"), load_films(data_dir, "val")
    val_crops, val_classes, val_levels = draw_crops(val, np.random.default_rng(VAL_DRAW_SEED), False, shape=shape)
    model = build_tilt_model(
        shape.hw, filters, name="vertebra_ends", outputs=len(ENDS_CLASSES), activation="softmax", output_name="ends"
    )
    if init_weights is not None:
        model.load_weights(init_weights)
    extra = FULL_BODY_DRAWS * sum(len(c) for c in full_body.classes) if full_body is not None else 0
    per_epoch = (len(train.names) * (len(END_LEVELS) + MIDDLE_PER_FILM) + extra) // batch_size + 1
    schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=epochs * per_epoch)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy")

    def validate() -> dict[str, float]:
        probs = model.predict(val_crops, batch_size=256, verbose=0)
        val_loss = float(np.mean(-np.log(np.maximum(probs[np.arange(len(val_classes)), val_classes], 1e-7))))
        return {"val_loss": val_loss, **end_figures(probs, val_classes, val_levels)}

    return fit_epochs(
        model,
        run_dir,
        EpochPlan(epochs, batch_size, seed, time_budget, "val_loss", "ends"),
        lambda rng: _epoch_crops(train, full_body, rng, shape),
        validate,
    )


def _epoch_crops(
    train: TiltFilms, full_body: LabelledBodies | None, rng: np.random.Generator, shape: CropShape
) -> tuple[np.ndarray, np.ndarray]:
    crops, classes, _ = draw_crops(train, rng, augment=True, shape=shape)
    if full_body is None or not full_body.names:
        return crops, classes
    more, more_classes = full_body_crops(full_body, rng, shape)
    return np.concatenate([crops, more]), np.concatenate([classes, more_classes])
