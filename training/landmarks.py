"""The landmark model: vertebra-centre heatmap + corner offsets (+ the body mask) on the Ap_Vertebra U-Net.

The U-Net's last decoder features (full 512x256 frame) feed three heads whose outputs are concatenated
into one (N, H, W, 11) map, decoded by `spine_core.landmarks`. Initialised from the exported
`Ap_Vertebra` weights (read back from ONNX, BatchNorm folded: the BatchNorm layers stay frozen), so the
network starts out knowing where vertebral bodies are and learns which one is which and where its
corners lie.

Targets are made per batch after the geometric augmentation: the same affine warp that moves the
image moves the corners (its inverse, applied to points), and a horizontal flip swaps left and right
corners.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import keras
import numpy as np
from keras import layers, ops
from PIL import Image

from spine_core.cobb import N_VERTEBRAE, cobb_angles
from spine_core.landmark_metrics import chain_offset, smape_pct, vertebra_heights
from spine_core.landmarks import (
    ENDS_CHANNEL,
    HEATMAP_CHANNEL,
    LEVEL_CHANNEL,
    LEVEL_SCALE,
    MASK_CHANNEL,
    OFFSET_CHANNELS,
    OFFSET_SCALE,
    decode,
)
from spine_core.preprocessing import UNET_INPUT_HW, Letterbox, preprocess_image
from training.augment import AugmentConfig, affine_params, augment_batch
from training.cache import image_arrays, load_aasce_cache, quantize
from training.datasets import rasterize_vertebrae, read_aasce_dataset
from training.models import build_unet
from training.train import FitConfig, FitResult, as_float, dice_bce_loss, fit, save_without_optimizer

log = logging.getLogger(__name__)

LANDMARK_OUTPUT_NAME = "heads"
OFFSET_RADIUS = 2.5  # frame pixels around a centre where the corner offsets (and the level) are learnt
ENDS_LOSS_WEIGHT = 0.5  # the C7/S1 heatmap's focal loss against the centre heatmap's (weight 1)
LEVEL_LOSS_WEIGHT = 0.1  # per vertebra of level error: a level one off costs about what the offsets cost
# Geometry a little wider than the U-Net's: smaller spines (more context) are what a full-body window looks like.
LANDMARK_AUGMENT = AugmentConfig(max_rotation_deg=10.0, scale_range=(0.7, 1.15), max_shift_frac=0.08)


# ---- cache ---------------------------------------------------------------------------------------------


def frame_corners(landmarks: np.ndarray, box: Letterbox) -> np.ndarray:
    """(68, 2) normalised AASCE corners -> (17, 4, 2) in the letterboxed frame (pixel edges at integers)."""
    xy = np.asarray(landmarks, dtype=np.float64).reshape(N_VERTEBRAE, 4, 2)
    return np.stack([box.left + xy[..., 0] * box.content_w, box.top + xy[..., 1] * box.content_h], axis=-1)


def build_landmark_cache(
    data_dir: Path, out_path: Path, out_hw: tuple[int, int] = UNET_INPUT_HW, jpeg_quality: int | None = None
) -> Path:
    """jpeg_quality stores the frames as JPEG (to carry the cache to a lent GPU; `load_landmark_cache` reads both)."""
    images, corners, masks, boxes = [], [], [], []
    samples = read_aasce_dataset(data_dir)
    for sample in samples:
        x, box = preprocess_image(sample.image(), out_hw)
        images.append(quantize(x))
        c = frame_corners(sample.landmarks, box)
        corners.append(c)
        masks.append(rasterize_vertebrae(_normalised(c, out_hw), *out_hw))
        boxes.append([box.src_h, box.src_w, box.content_h, box.content_w, box.top, box.left])
    np.savez_compressed(
        out_path,
        **image_arrays(images, jpeg_quality),
        corners=np.stack(corners).astype(np.float32),
        masks=np.packbits(np.stack(masks), axis=-1),
        mask_width=np.array(out_hw[1]),
        boxes=np.array(boxes),
        names=np.array([s.name for s in samples]),
        patient_keys=np.array([s.patient_key for s in samples]),
        cobb=np.stack([s.cobb_angles for s in samples]),
    )
    return out_path


def _normalised(corners: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    return (corners / np.array([hw[1], hw[0]])).reshape(-1, 2)


def load_landmark_cache(path: Path) -> dict[str, np.ndarray]:
    return load_aasce_cache(path)  # the same layout: frames (stacked or JPEG), packed masks, per-film arrays


# ---- targets -------------------------------------------------------------------------------------------


def warp_corners(corners: np.ndarray, params: np.ndarray) -> np.ndarray:
    """(B, 17, 4, 2) corners -> where the augmentation's warp puts them; a flip swaps left and right corners.

    `params` maps an output pixel index to an input pixel index (keras' affine_transform); points go the
    other way, so the 2x3 map is inverted. Pixel indices are pixel centres, our coordinates pixel edges.
    """
    a = params[:, [0, 1, 3, 4]].reshape(-1, 2, 2).astype(np.float64)
    t = params[:, [2, 5]].astype(np.float64)
    inv = np.linalg.inv(a)
    pts = corners - 0.5 - t[:, None, None, :]
    out = np.einsum("bij,bvcj->bvci", inv, pts) + 0.5
    flipped = params[:, 0] < 0
    out[flipped] = out[flipped][:, :, [1, 0, 3, 2]]
    return out


def beyond_centres(corners: np.ndarray) -> np.ndarray:
    """(17, 4, 2) corners of T1..L5 -> (2, 3): x, y and height of C7 and S1, one step beyond each end.

    The labels stop at T1 and L5; the next vertebra lies about one step (centre to centre) beyond, with a
    step and a height like its neighbour's: close enough for a heatmap peak of the same width."""
    centres = corners.mean(axis=1)
    heights = vertebra_heights(corners)
    c7 = 2 * centres[0] - centres[1]
    s1 = 2 * centres[-1] - centres[-2]
    return np.array([[*c7, heights[0]], [*s1, heights[-1]]])


def _draw_peak(channel: np.ndarray, rows: np.ndarray, cols: np.ndarray, cx: float, cy: float, height: float):
    """A Gaussian peak (sigma an eighth of the vertebra's height) with its one positive pixel; -> (window, d2)."""
    h, w = channel.shape
    sigma = max(1.5, height / 8)
    r = int(np.ceil(3 * sigma))
    y0, y1 = max(0, int(cy) - r), min(h, int(cy) + r + 1)
    x0, x1 = max(0, int(cx) - r), min(w, int(cx) + r + 1)
    d2 = (rows[y0:y1, x0:x1] - cy) ** 2 + (cols[y0:y1, x0:x1] - cx) ** 2
    np.maximum(channel[y0:y1, x0:x1], np.exp(-d2 / (2 * sigma**2)), out=channel[y0:y1, x0:x1])
    channel[int(cy), int(cx)] = 1.0  # the focal loss's one positive pixel per vertebra
    return (slice(y0, y1), slice(x0, x1)), d2


TARGET_CHANNELS = 13  # heatmap, 8 offsets, offset weight, ends heatmap, level, level weight (the mask follows)


def _level_value(level: int) -> float:
    """Level index (C7 = -1, T1 = 0 .. L5 = 16, S1 = 17) -> the level channel's target, 0 at C7 and 1 at S1."""
    return (level + 1) / LEVEL_SCALE


def make_targets(corners: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(B, 17, 4, 2) frame corners -> (B, H, W, 13): heatmap, 8 offsets, offset weight, ends heatmap, level, level weight.

    The heatmap is a Gaussian per vertebra (sigma an eighth of its height); vertebrae whose centre left
    the frame are not drawn. The ends heatmap has the same peaks at C7 and S1 (`beyond_centres`). The level
    channel says which vertebra a centre belongs to (`_level_value`), learnt within OFFSET_RADIUS of the
    centres of C7, T1..L5 and S1.
    """
    h, w = hw
    b = len(corners)
    target = np.zeros((b, h, w, TARGET_CHANNELS), dtype=np.float32)
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32) + 0.5
    for i in range(b):
        for level, (cx, cy, height) in zip((-1, N_VERTEBRAE), beyond_centres(corners[i]), strict=True):
            if 0 <= cx < w and 0 <= cy < h:
                window, d2 = _draw_peak(target[i, ..., 10], rows, cols, cx, cy, height)
                _write_level(target[i][window], d2, level)
        for v in range(N_VERTEBRAE):
            quad = corners[i, v]
            cx, cy = quad.mean(axis=0)
            if not (0 <= cx < w and 0 <= cy < h):
                continue
            window, d2 = _draw_peak(target[i, ..., 0], rows, cols, cx, cy, float(vertebra_heights(quad)[0]))
            patch = target[i][window]
            near = d2 <= OFFSET_RADIUS**2
            offsets = (quad[None, None] - np.stack([cols[window], rows[window]], -1)[:, :, None, :]) / OFFSET_SCALE
            patch[..., 1:9][near] = offsets.reshape(*d2.shape, 8)[near]
            patch[..., 9][near] = 1.0
            _write_level(patch, d2, v)
    return target


def _write_level(patch: np.ndarray, d2: np.ndarray, level: int) -> None:
    near = d2 <= OFFSET_RADIUS**2
    patch[..., 11][near] = _level_value(level)
    patch[..., 12][near] = 1.0


def _focal(hm_t, hm_p):
    """Penalty-reduced focal loss (CenterNet) of one heatmap, per image, over its positive pixels."""
    hm_p = ops.clip(hm_p, 1e-4, 1 - 1e-4)
    pos = ops.cast(hm_t >= 0.99, "float32")
    n_pos = ops.maximum(ops.sum(pos, axis=(1, 2)), 1.0)
    focal = -(
        pos * ops.square(1 - hm_p) * ops.log(hm_p) + (1 - pos) * ops.power(1 - hm_t, 4) * ops.square(hm_p) * ops.log(1 - hm_p)
    )
    return ops.sum(focal, axis=(1, 2)) / n_pos


def landmark_loss(y_true, y_pred, ends_weight: float = ENDS_LOSS_WEIGHT):
    """Focal loss on the centre and ends heatmaps, masked L1 on the offsets (and the level), Dice+BCE on the mask.

    y_true: `make_targets`' 13 channels and the mask (14); y_pred: the model's 11, or 12 with the level head.
    """
    hm_loss = _focal(y_true[..., 0], y_pred[..., HEATMAP_CHANNEL])
    ends_loss = _focal(y_true[..., 10], y_pred[..., ENDS_CHANNEL])
    weight = y_true[..., 9:10]
    l1 = ops.sum(weight * ops.abs(y_true[..., 1:9] - y_pred[..., OFFSET_CHANNELS]), axis=(1, 2, 3))
    off_loss = l1 / ops.maximum(ops.sum(weight, axis=(1, 2, 3)) * 8, 1.0)
    mask_loss = dice_bce_loss(y_true[..., -1:], y_pred[..., MASK_CHANNEL : MASK_CHANNEL + 1])
    total = hm_loss + ends_weight * ends_loss + 4.0 * off_loss + 0.5 * mask_loss
    if y_pred.shape[-1] > LEVEL_CHANNEL:  # the error in vertebrae, so a level one off costs LEVEL_LOSS_WEIGHT
        level_w = y_true[..., 12]
        level_err = ops.abs(y_true[..., 11] - y_pred[..., LEVEL_CHANNEL]) * LEVEL_SCALE
        total = total + LEVEL_LOSS_WEIGHT * ops.sum(level_w * level_err, axis=(1, 2)) / ops.maximum(
            ops.sum(level_w, axis=(1, 2)), 1.0
        )
    return total


# ---- model ---------------------------------------------------------------------------------------------


def build_landmark_model(
    input_hw=UNET_INPUT_HW,
    filters: int = 16,
    num_layers: int = 4,
    init_weights: str | None = None,
    freeze_encoder: bool = False,
    init_landmarks: str | None = None,
    ends_head: bool = True,
    level_head: bool = False,
):
    """freeze_encoder keeps the Ap_Vertebra encoder as it is (a CPU run trains the decoder and heads only).

    init_landmarks: the weights of a landmark model trained before the ends head: every other layer starts
    from them, so the new head is trained on top of what the model already knows.
    level_head adds channel 12 (`LEVEL_CHANNEL`): which vertebra a centre is, from its own 3x3 branch on the
    decoder, so that counting down the chain need not rest on the two ends alone."""
    base = build_unet(input_hw, filters=filters, num_layers=num_layers, name="unet")
    if init_weights:
        base.load_weights(init_weights)
    for layer in base.layers:  # the init's BatchNorm is folded into its convolutions: keep it as it is
        if isinstance(layer, layers.BatchNormalization) or (freeze_encoder and layer.name.startswith(("down", "bottleneck"))):
            layer.trainable = False
    features = base.get_layer("up0_relu2").output
    shared = layers.Conv2D(24, 3, padding="same", activation="relu", name="heads_conv")(features)
    hm = layers.Conv2D(1, 1, activation="sigmoid", bias_initializer=keras.initializers.Constant(-2.2), name="heatmap")(shared)
    off = layers.Conv2D(8, 1, name="offsets")(shared)
    parts = [hm, off, base.output]
    if ends_head:  # False only to read weights saved before the head existed
        # Starts near 0 everywhere (zero kernel, sigmoid(-4.6) = 0.01): a new head must not disturb the shared
        # features it is added to with a large first loss.
        start = keras.initializers.Constant(-4.6)
        ends = layers.Conv2D(1, 1, activation="sigmoid", kernel_initializer="zeros", bias_initializer=start, name="ends")
        parts.append(ends(shared))
    if level_head:  # starts at 0.5 (T8/T9) everywhere with a zero kernel, for the same reason as the ends head
        branch = layers.Conv2D(16, 3, padding="same", activation="relu", name="level_conv")(features)
        zero, middle = keras.initializers.Zeros(), keras.initializers.Constant(0.5)
        parts.append(layers.Conv2D(1, 1, kernel_initializer=zero, bias_initializer=middle, name="level")(branch))
    out = layers.Concatenate(name=LANDMARK_OUTPUT_NAME)(parts)
    model = keras.Model(base.input, out, name="landmarks")  # input keeps the U-Net's name, UNET_INPUT_NAME
    if init_landmarks:
        _load_matching(model, init_landmarks)
    return model


def _load_matching(model, weights_path: str) -> None:
    """Copy a landmark model's weights (`weights_path`, its .weights.h5; with or without the ends head) into `model`,
    layer by layer name: Keras' weight files name layers by build order, so the old graph is built to read it."""
    for ends_head in (True, False):
        old = build_landmark_model(model.input_shape[1:3], ends_head=ends_head)
        try:
            old.load_weights(weights_path)
            break
        except ValueError:  # a layer count that does not match: the file is of the other layout
            continue
    by_name = {layer.name: layer for layer in old.layers}
    fresh = [layer.name for layer in model.layers if layer.weights and layer.name not in by_name]
    for layer in model.layers:
        if layer.weights and layer.name in by_name:
            layer.set_weights(by_name[layer.name].get_weights())
    log.info("init-landmarks: layers loaded from %s; starting afresh: %s", weights_path, fresh or "none")


# ---- evaluation ----------------------------------------------------------------------------------------


def evaluate_heads(heads: np.ndarray, corners_true: np.ndarray, cobb_true: np.ndarray) -> dict[str, float]:
    """Frame-level figures of a batch of model outputs: SMAPE (a film without an answer counts 100 %), corner error,
    level accuracy (the share of films whose 17 vertebrae lie, by their median offset, within half a step)."""
    per_film, corner_err, answered, levels_right = [], [], 0, 0
    for out, truth, angles in zip(heads, corners_true, cobb_true, strict=True):
        found = decode(out)
        if found is None:
            per_film.append(100.0)
            continue
        answered += 1
        levels_right += bool(abs(chain_offset(found.corners, truth)) < 0.5)
        pred = cobb_angles(found.corners, out.shape[0]).aasce_angles_deg
        per_film.append(smape_pct(np.array([pred]), np.array([angles])))
        corner_err.append(float(np.linalg.norm(found.corners - truth, axis=-1).mean()))
    return {
        "val_smape": float(np.mean(per_film)),
        "val_answered": answered / len(heads),
        "val_corner_px": float(np.mean(corner_err)) if corner_err else float("nan"),
        "val_level_accuracy": levels_right / len(heads),
        "val_score": -float(np.mean(per_film)),
    }


def predict(model, x: np.ndarray, batch_size: int = 8) -> np.ndarray:
    batches = (model.predict_on_batch(x[i : i + batch_size]) for i in range(0, len(x), batch_size))
    return np.concatenate([ops.convert_to_numpy(b) for b in batches])


def train_landmarks(
    data: dict,
    train_idx,
    val_idx,
    run_dir: Path,
    cfg: FitConfig,
    init_weights: str | None,
    resume: bool = True,
    crop_height: int | None = 256,
    init_landmarks: str | None = None,
    level_head: bool = False,
    average_from: int = 0,
    ends_loss_weight: float = ENDS_LOSS_WEIGHT,
):
    """crop_height trains on windows of the augmented frames (half the frame halves a CPU step); validation
    runs on whole frames: the model is fully convolutional and its receptive field is smaller than a window.

    average_from (> 0): from that epoch of this process on, `mean.weights.h5` holds the mean of the weights at
    the end of each epoch (the validation figures swing from epoch to epoch; their mean is steadier, like
    `scripts/landmark_soup.py`'s; a resumed run starts a new mean)."""
    keras.utils.set_random_seed(cfg.seed)
    hw = data["images"].shape[1:3]
    model = build_landmark_model((None, None), init_weights=init_weights, init_landmarks=init_landmarks, level_head=level_head)
    x_tr, c_tr, m_tr = data["images"][train_idx], data["corners"][train_idx], data["masks"][train_idx]
    x_va, c_va, cobb_va = as_float(data["images"][val_idx]), data["corners"][val_idx], data["cobb"][val_idx]
    aug = LANDMARK_AUGMENT

    def make_batch(idx, rng):
        params = affine_params(len(idx), *hw, aug, rng)
        xb, mb = augment_batch(as_float(x_tr[idx]), m_tr[idx][..., None], aug, rng, params=params)
        # convert_to_numpy: on the torch backend on a GPU the augmented batch is a CUDA tensor
        targets = np.concatenate([make_targets(warp_corners(c_tr[idx], params), hw), ops.convert_to_numpy(mb)], axis=-1)
        xb = ops.convert_to_numpy(xb)
        if crop_height and crop_height < hw[0]:
            top = int(rng.integers(0, hw[0] - crop_height + 1))
            xb, targets = xb[:, top : top + crop_height], targets[:, top : top + crop_height]
        return xb, targets

    best_levels = {"accuracy": -1.0, "smape": np.inf}
    running: dict = {"epoch": 0, "n": 0, "sum": None}

    def evaluate(m):
        running["epoch"] += 1
        if average_from and running["epoch"] >= average_from:
            _add_to_mean(m, running, run_dir / "mean.weights.h5")
        metrics = evaluate_heads(predict(m, x_va), c_va, cobb_va)
        # A second checkpoint, best by level accuracy (then SMAPE): the epoch best by SMAPE can place levels worse.
        key = (metrics["val_level_accuracy"], -metrics["val_smape"])
        if key > (best_levels["accuracy"], -best_levels["smape"]):
            best_levels.update(accuracy=key[0], smape=metrics["val_smape"])
            save_without_optimizer(m, run_dir / "best_levels.weights.h5")
        return metrics

    def loss(y_true, y_pred):
        return landmark_loss(y_true, y_pred, ends_loss_weight)

    result: FitResult = fit(model, len(x_tr), make_batch, evaluate, "val_score", cfg, run_dir, loss, resume)
    return model, result


def _add_to_mean(model, running: dict, path: Path) -> None:
    """Add the model's weights to the running sum and write the mean (the model keeps its own weights)."""
    current = model.get_weights()
    running["sum"] = current if running["sum"] is None else [a + b for a, b in zip(running["sum"], current, strict=True)]
    running["n"] += 1
    model.set_weights([w / running["n"] for w in running["sum"]])
    save_without_optimizer(model, path)
    model.set_weights(current)


def width_profile(data_dir: Path) -> np.ndarray:
    """Mean relative width of T1..L5 over the AASCE films (each film's widths over its own mean)."""
    ratios = []
    for sample in read_aasce_dataset(data_dir):
        with Image.open(sample.image_path) as img:
            xy = sample.corners(img.height, img.width)
        widths = np.linalg.norm((xy[:, 1] + xy[:, 3]) / 2 - (xy[:, 0] + xy[:, 2]) / 2, axis=1)
        ratios.append(widths / widths.mean())
    return np.mean(ratios, axis=0)


if __name__ == "__main__":  # python -m training.landmarks profile DATA_DIR
    if len(sys.argv) == 3 and sys.argv[1] == "profile":
        print(json.dumps([round(float(v), 3) for v in width_profile(Path(sys.argv[2]))]))
