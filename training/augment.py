"""Batch augmentation with keras.ops, so it runs on the training device whatever the backend.

Geometry (scale, rotation, shift, horizontal flip) is applied to image and mask together with one
affine warp; intensity (gamma, contrast, brightness, noise) to the image only. Parameters are
drawn with numpy so a seeded run is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import ops


@dataclass(frozen=True)
class AugmentConfig:
    max_rotation_deg: float = 8.0
    scale_range: tuple[float, float] = (0.85, 1.15)
    max_shift_frac: float = 0.06
    flip: bool = True
    gamma_range: tuple[float, float] = (0.7, 1.5)
    contrast_range: tuple[float, float] = (0.75, 1.25)
    brightness: float = 0.1
    noise_std: float = 0.03


def affine_params(batch: int, height: int, width: int, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """(B, 8) projective transforms mapping each output pixel (x, y) to an input pixel, centred."""
    theta = np.deg2rad(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg, batch))
    scale = rng.uniform(*cfg.scale_range, batch)
    flip = np.where(rng.random(batch) < 0.5, -1.0, 1.0) if cfg.flip else np.ones(batch)
    tx = rng.uniform(-cfg.max_shift_frac, cfg.max_shift_frac, batch) * width
    ty = rng.uniform(-cfg.max_shift_frac, cfg.max_shift_frac, batch) * height
    cx, cy = (width - 1) / 2, (height - 1) / 2
    cos, sin = np.cos(theta) / scale, np.sin(theta) / scale
    # input = A @ (output - c - t) + c, with A = R(theta)/scale and the x axis optionally flipped.
    a0, a1 = cos * flip, -sin
    b0, b1 = sin * flip, cos
    a2 = cx - a0 * (cx + tx) - a1 * (cy + ty)
    b2 = cy - b0 * (cx + tx) - b1 * (cy + ty)
    zeros = np.zeros(batch)
    return np.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1).astype(np.float32)


def augment_batch(
    images: np.ndarray, masks: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator, params: np.ndarray | None = None
):
    """images (B,H,W,1) float32 in [0,1], masks (B,H,W,1) {0,1} -> augmented backend tensors.

    params: the warp (`affine_params`) when the caller needs it too (to move landmarks with the image).
    """
    b, h, w, _ = images.shape
    stacked = ops.concatenate([ops.convert_to_tensor(images), ops.convert_to_tensor(masks.astype(np.float32))], axis=-1)
    transform = ops.convert_to_tensor(affine_params(b, h, w, cfg, rng) if params is None else params)
    warped = ops.image.affine_transform(stacked, transform, interpolation="bilinear", fill_mode="constant", fill_value=0.0)
    image, mask = warped[..., :1], ops.cast(warped[..., 1:] >= 0.5, "float32")

    def draw(low: float, high: float):
        # Tensors, not numpy arrays: numpy * a CUDA tensor fails on the torch backend.
        return ops.convert_to_tensor(rng.uniform(low, high, (b, 1, 1, 1)).astype(np.float32))

    gamma, contrast = draw(*cfg.gamma_range), draw(*cfg.contrast_range)
    bright, noise_std = draw(-cfg.brightness, cfg.brightness), draw(0.0, cfg.noise_std)
    image = ops.power(ops.clip(image, 0.0, 1.0), gamma)
    image = (image - 0.5) * contrast + 0.5 + bright
    image = image + keras.random.normal(ops.shape(image), seed=int(rng.integers(1 << 31))) * noise_std
    return ops.clip(image, 0.0, 1.0), mask
