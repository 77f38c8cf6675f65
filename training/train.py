"""Training loops for the U-Nets and the mask classifier.

Backend-agnostic Keras 3 (train_on_batch + keras.ops augmentation): the same code trains with
TensorFlow on a CPU and with `KERAS_BACKEND=torch` on a GPU machine. Each run writes into its own
folder: `best.weights.h5`, `last.weights.h5`, `state.json` (history, epoch, best score, so an
interrupted run resumes where it stopped) and `curves.png`.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras
import numpy as np
from keras import ops
from tqdm import tqdm

from spine_core.preprocessing import MASK_THRESHOLD
from training.augment import AugmentConfig, affine_params, augment_batch
from training.metrics import accuracy, dice, roc_auc
from training.models import build_classifier, build_unet

log = logging.getLogger(__name__)


def dice_bce_loss(y_true, y_pred):
    """Binary cross-entropy plus soft-Dice loss per image (robust to the small foreground of thin structures)."""
    y_true = ops.cast(y_true, y_pred.dtype)
    bce = ops.mean(keras.losses.binary_crossentropy(y_true, y_pred), axis=(1, 2))
    inter = ops.sum(y_true * y_pred, axis=(1, 2, 3))
    denom = ops.sum(y_true + y_pred, axis=(1, 2, 3))
    return bce + 1.0 - (2.0 * inter + 1.0) / (denom + 1.0)


LOSSES: dict[str, Callable | str] = {"bce": "binary_crossentropy", "dice_bce": dice_bce_loss}


@dataclass
class FitConfig:
    epochs: int = 100
    batch_size: int = 16
    learning_rate: float = 1e-3
    patience: int = 20  # early stopping, in epochs without improvement of the monitored metric
    lr_patience: int = 6  # halve the learning rate after this many epochs without improvement
    min_learning_rate: float = 1e-5
    time_budget_s: float | None = None  # stop cleanly once the next epoch would exceed it
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class FitResult:
    best_epoch: int
    best_score: float
    epochs_run: int
    seconds: float
    history: list[dict]
    stopped: str


def _save_curves(history: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # curves are a convenience; training must not depend on them
        return
    keys = [k for k in history[0] if k != "epoch"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3))
    for ax, key in zip(np.atleast_1d(axes), keys, strict=True):
        ax.plot([h["epoch"] for h in history], [h[key] for h in history])
        ax.set_title(key)
        ax.set_xlabel("epoch")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def save_without_optimizer(model: keras.Model, path: Path) -> None:
    """The model's weights alone: Keras 3 writes a compiled model's Adam moments into .weights.h5 too (three times
    the size); only `last.weights.h5`, which a resumed run continues from, needs them."""
    import h5py

    tmp = path.with_name(f"unstripped_{path.name}")  # Keras wants the .weights.h5 ending
    model.save_weights(tmp)
    with h5py.File(tmp, "r") as src, h5py.File(path, "w") as dst:
        for key in src:
            if key != "optimizer":
                src.copy(src[key], dst, name=key)
        for name, value in src.attrs.items():
            dst.attrs[name] = value
    tmp.unlink()


def fit(
    model: keras.Model,
    n_train: int,
    make_batch: Callable[[np.ndarray, np.random.Generator], tuple],
    evaluate: Callable[[keras.Model], dict[str, float]],
    monitor: str,
    cfg: FitConfig,
    run_dir: Path,
    loss: Callable | str,
    resume: bool = True,
) -> FitResult:
    """Generic loop: shuffled mini-batches, per-epoch evaluation, checkpoints, LR decay, early stop."""
    run_dir.mkdir(parents=True, exist_ok=True)
    state_path = run_dir / "state.json"
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate), loss=loss)
    history: list[dict] = []
    start_epoch, best, best_epoch, lr, stale = 0, -np.inf, -1, cfg.learning_rate, 0
    earlier_seconds = 0.0  # training time of the runs this one resumes, so a resumed run reports its total
    if resume and state_path.exists() and (run_dir / "last.weights.h5").exists():
        state = json.loads(state_path.read_text())
        model.optimizer.build(model.trainable_variables)  # so the Adam moments in the checkpoint load too
        model.load_weights(run_dir / "last.weights.h5")
        history, start_epoch = state["history"], state["epoch"] + 1
        best, best_epoch, lr, stale = state["best"], state["best_epoch"], state["lr"], state["stale"]
        earlier_seconds = float(state.get("seconds", 0.0))
        log.info("resuming %s at epoch %d (best %s=%.4f)", run_dir, start_epoch, monitor, best)
    model.optimizer.learning_rate.assign(lr)
    rng = np.random.default_rng(cfg.seed + start_epoch)
    t0 = time.perf_counter()
    stopped = "epochs"
    epoch_time = 0.0
    for epoch in range(start_epoch, cfg.epochs):
        if cfg.time_budget_s is not None and time.perf_counter() - t0 + epoch_time > cfg.time_budget_s:
            stopped = "time budget"
            break
        te = time.perf_counter()
        order = rng.permutation(n_train)
        n_batches = max(1, n_train // cfg.batch_size)
        losses = []
        bar = tqdm(range(n_batches), desc=f"{run_dir.name} {epoch + 1}/{cfg.epochs}", leave=False, mininterval=2.0)
        for b in bar:
            idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            xb, yb = make_batch(idx, rng)
            out = model.train_on_batch(xb, yb, return_dict=True)
            losses.append(float(out["loss"]))
            bar.set_postfix(loss=f"{np.mean(losses):.4f}")
        metrics = evaluate(model)
        row = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "lr": lr, **metrics}
        history.append(row)
        score = metrics[monitor]
        # NaN (e.g. AUC on a one-class validation set) never counts as better, but the first epoch is kept.
        if best_epoch < 0 or (not np.isnan(score) and (np.isnan(best) or score > best)):
            best, best_epoch, stale = score, epoch + 1, 0
            save_without_optimizer(model, run_dir / "best.weights.h5")
        else:
            stale += 1
            if stale % cfg.lr_patience == 0 and lr > cfg.min_learning_rate:
                lr = max(cfg.min_learning_rate, lr / 2)
                model.optimizer.learning_rate.assign(lr)
        model.save_weights(run_dir / "last.weights.h5")
        state_path.write_text(
            json.dumps(
                {
                    "epoch": epoch,
                    "best": best,
                    "best_epoch": best_epoch,
                    "lr": lr,
                    "stale": stale,
                    "seconds": earlier_seconds + time.perf_counter() - t0,
                    "history": history,
                }
            )
        )
        epoch_time = time.perf_counter() - te
        log.info(
            "%s epoch %d loss %.4f %s %.4f (best %.4f @%d) %.1fs",
            run_dir.name,
            epoch + 1,
            row["loss"],
            monitor,
            score,
            best,
            best_epoch,
            epoch_time,
        )
        if stale >= cfg.patience:
            stopped = "early stopping"
            break
    seconds = earlier_seconds + time.perf_counter() - t0
    if history:
        _save_curves(history, run_dir / "curves.png")
    if (run_dir / "best.weights.h5").exists():
        with warnings.catch_warnings():  # best.weights.h5 holds no Adam moments (save_without_optimizer), by design
            warnings.filterwarnings("ignore", message="Skipping variable loading for optimizer")
            model.load_weights(run_dir / "best.weights.h5")
    result = FitResult(best_epoch, float(best), len(history), seconds, history, stopped)
    (run_dir / "result.json").write_text(json.dumps({**asdict(result), "config": _jsonable(asdict(cfg))}, indent=1))
    return result


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def predict_probabilities(model: keras.Model, x: np.ndarray, batch_size: int = 16) -> np.ndarray:
    return np.concatenate([np.asarray(model.predict_on_batch(x[i : i + batch_size])) for i in range(0, len(x), batch_size)])


def as_float(images_u8: np.ndarray) -> np.ndarray:
    return (images_u8.astype(np.float32) / 255.0)[..., np.newaxis]


def train_unet(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    run_dir: Path,
    cfg: FitConfig,
    filters: int = 16,
    num_layers: int = 4,
    loss: str = "dice_bce",
    resume: bool = True,
    init_weights: str | Path | None = None,
    crop_hw: tuple[int, int] | None = None,
    bn_momentum: float = 0.99,
    freeze_batchnorm: bool = False,
) -> tuple[keras.Model, FitResult]:
    """x: (N,H,W) uint8 preprocessed images, y: (N,H,W) bool masks, both in the model frame.

    crop_hw trains on random crops (centred near foreground) of the augmented frames, which costs
    a fraction of full frames on a CPU; validation always runs on whole frames.
    freeze_batchnorm keeps every BatchNormalization layer in inference mode with its weights fixed:
    for fine-tuning weights whose statistics are already folded into the convolutions (an exported
    ONNX graph read back into Keras), where batch statistics would undo the folding.
    """
    keras.utils.set_random_seed(cfg.seed)
    model = build_unet(
        (None, None) if crop_hw else x_train.shape[1:3], filters=filters, num_layers=num_layers, bn_momentum=bn_momentum
    )
    if init_weights:
        model.load_weights(init_weights)
    if freeze_batchnorm:
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.trainable = False  # Keras 3: a non-trainable BatchNormalization runs in inference mode
    y_train_f = y_train[..., np.newaxis]

    def make_batch(idx, rng):
        xb, yb = augment_batch(as_float(x_train[idx]), y_train_f[idx], cfg.augment, rng)
        if crop_hw is None:
            return xb, yb
        return _foreground_crop(xb, yb, y_train[idx[0]], crop_hw, rng)

    def evaluate(m):
        probs = predict_probabilities(m, as_float(x_val), cfg.batch_size)[..., 0]
        scores = [dice(p >= MASK_THRESHOLD, t) for p, t in zip(probs, y_val, strict=True)]
        return {"val_dice": float(np.mean(scores)), "val_dice_median": float(np.median(scores))}

    result = fit(model, len(x_train), make_batch, evaluate, "val_dice", cfg, run_dir, LOSSES[loss], resume)
    return model, result


def _foreground_crop(xb, yb, reference_mask: np.ndarray, crop_hw: tuple[int, int], rng: np.random.Generator):
    """One crop window for the batch, centred on a random foreground pixel of the first (un-augmented) mask."""
    h, w = reference_mask.shape
    ch, cw = crop_hw
    ys, xs = np.nonzero(reference_mask)
    if len(ys) and rng.random() < 0.8:
        k = rng.integers(len(ys))
        cy, cx = ys[k] + rng.integers(-ch // 4, ch // 4 + 1), xs[k] + rng.integers(-cw // 4, cw // 4 + 1)
    else:
        cy, cx = rng.integers(h), rng.integers(w)
    y0 = int(np.clip(cy - ch // 2, 0, h - ch))
    x0 = int(np.clip(cx - cw // 2, 0, w - cw))
    return xb[:, y0 : y0 + ch, x0 : x0 + cw, :], yb[:, y0 : y0 + ch, x0 : x0 + cw, :]


def augment_masks_only(masks: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator):
    """Geometric augmentation of classifier inputs (B,h,w,1); intensities are mask fractions, kept as is."""
    b, h, w, _ = masks.shape
    transform = ops.convert_to_tensor(affine_params(b, h, w, cfg, rng))
    return ops.image.affine_transform(
        ops.convert_to_tensor(masks), transform, interpolation="bilinear", fill_mode="constant", fill_value=0.0
    )


def train_classifier(
    x_train: np.ndarray,
    labels_train: np.ndarray,
    x_val: np.ndarray,
    labels_val: np.ndarray,
    run_dir: Path,
    cfg: FitConfig,
    resume: bool = True,
) -> tuple[keras.Model, FitResult]:
    """x: (N,h,w) float32 classifier inputs (from masks), labels: bool Damaged. Monitors validation AUC."""
    keras.utils.set_random_seed(cfg.seed)
    model = build_classifier(x_train.shape[1:3])
    x_train_f, x_val_f = x_train[..., np.newaxis].astype(np.float32), x_val[..., np.newaxis].astype(np.float32)
    onehot = keras.utils.to_categorical(labels_train.astype(int), 2).astype(np.float32)
    # No flips: the direction of a curve is not what makes it severe, but a flip is harmless; keep geometry mild.
    geo = AugmentConfig(max_rotation_deg=5.0, scale_range=(0.92, 1.08), max_shift_frac=0.04, flip=True)

    def make_batch(idx, rng):
        return augment_masks_only(x_train_f[idx], geo, rng), onehot[idx]

    def evaluate(m):
        p = predict_probabilities(m, x_val_f, 64)[:, 1]
        return {"val_auc": roc_auc(labels_val, p), "val_accuracy": accuracy(labels_val, p >= 0.5)}

    result = fit(model, len(x_train), make_batch, evaluate, "val_auc", cfg, run_dir, "categorical_crossentropy", resume)
    return model, result


def recalibrate_batchnorm(
    model: keras.Model,
    images: np.ndarray,
    masks: np.ndarray,
    passes: int = 60,
    batch_size: int = 8,
    momentum: float = 0.9,
    seed: int = 0,
) -> None:
    """Re-estimate BatchNorm moving statistics with forward passes in training mode (no weight update).

    Runs of a few dozen steps leave the moving averages (momentum 0.99) far from the batch statistics
    the weights were trained with; inference then sees activations in the thousands, and the model is
    numerically fragile (Keras and ONNX Runtime disagree by ~1e-3). This puts the statistics where
    training left the weights.
    """
    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    old = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = momentum
    rng = np.random.default_rng(seed)
    cfg = AugmentConfig()
    for _ in range(passes):
        idx = rng.integers(0, len(images), batch_size)
        xb, _ = augment_batch(as_float(images[idx]), masks[idx][..., np.newaxis], cfg, rng)
        model(xb, training=True)
    for bn, m in zip(bns, old, strict=True):
        bn.momentum = m
