"""The one preprocessing implementation shared by training, evaluation and serving.

Radiographs of the spine are tall (AASCE films are 2-3x taller than wide), so images are
*letterboxed*: scaled to fit the model's HxW without changing their aspect ratio and padded
with zeros. Intensities are normalised per image between two percentiles of the content
region, which makes 8-bit JPEGs, 16-bit PNGs and windowed DICOM land in the same [0, 1] range.

This module must not import TensorFlow: the service imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

UNET_INPUT_HW: tuple[int, int] = (512, 256)
CLASSIFIER_INPUT_HW: tuple[int, int] = (128, 64)
LOWER_PERCENTILE = 0.5
UPPER_PERCENTILE = 99.5
MASK_THRESHOLD = 0.5
PREPROCESSING_NAME = "letterbox-percentile-v1"


@dataclass(frozen=True)
class Letterbox:
    """Where the source image sits inside the model input, so masks can be mapped back."""

    src_h: int
    src_w: int
    out_h: int
    out_w: int
    content_h: int
    content_w: int
    top: int
    left: int

    @classmethod
    def fit(cls, src_h: int, src_w: int, out_hw: tuple[int, int]) -> Letterbox:
        out_h, out_w = out_hw
        scale = min(out_h / src_h, out_w / src_w)
        content_h = max(1, min(out_h, round(src_h * scale)))
        content_w = max(1, min(out_w, round(src_w * scale)))
        return cls(
            src_h=src_h,
            src_w=src_w,
            out_h=out_h,
            out_w=out_w,
            content_h=content_h,
            content_w=content_w,
            top=(out_h - content_h) // 2,
            left=(out_w - content_w) // 2,
        )


def to_grayscale(image: np.ndarray) -> np.ndarray:
    """Any HxW, HxWx1, HxWx3 or HxWx4 array of any numeric dtype -> float32 HxW (no rescaling)."""
    arr = np.asarray(image)
    if arr.ndim == 3:
        if arr.shape[2] == 1:
            arr = arr[..., 0]
        elif arr.shape[2] in (3, 4):
            # ITU-R 601 luma, as Pillow's "L" conversion; alpha is ignored.
            rgb = arr[..., :3].astype(np.float32)
            arr = rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        else:
            raise ValueError(f"unsupported channel count {arr.shape[2]}")
    if arr.ndim != 2:
        raise ValueError(f"expected a 2-D image, got shape {arr.shape}")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError("image has no pixels")
    return arr.astype(np.float32, copy=False)


def resize(array: np.ndarray, hw: tuple[int, int], resample: int = Image.Resampling.BILINEAR) -> np.ndarray:
    """Resize a float32 2-D array with Pillow (antialiased when shrinking)."""
    h, w = hw
    if array.shape == (h, w):
        return array.astype(np.float32, copy=False)
    img = Image.fromarray(np.ascontiguousarray(array, dtype=np.float32), mode="F")
    return np.asarray(img.resize((w, h), resample=resample), dtype=np.float32)


def letterbox(
    array: np.ndarray, out_hw: tuple[int, int], resample: int = Image.Resampling.BILINEAR
) -> tuple[np.ndarray, Letterbox]:
    """Fit a 2-D float array into out_hw keeping its aspect ratio; the padding is 0."""
    box = Letterbox.fit(array.shape[0], array.shape[1], out_hw)
    out = np.zeros(out_hw, dtype=np.float32)
    out[box.top : box.top + box.content_h, box.left : box.left + box.content_w] = resize(
        array, (box.content_h, box.content_w), resample
    )
    return out, box


def normalize_intensity(array: np.ndarray, box: Letterbox) -> np.ndarray:
    """Percentile-normalise the content region to [0, 1] in place; padding stays 0."""
    content = array[box.top : box.top + box.content_h, box.left : box.left + box.content_w]
    lo, hi = np.percentile(content, [LOWER_PERCENTILE, UPPER_PERCENTILE])
    if hi - lo < 1e-6:
        content[...] = 0.0
    else:
        np.clip((content - lo) / (hi - lo), 0.0, 1.0, out=content)
    return array


def preprocess_image(image: np.ndarray, out_hw: tuple[int, int] = UNET_INPUT_HW) -> tuple[np.ndarray, Letterbox]:
    """Decoded radiograph (any dtype, gray or colour) -> (HxW float32 in [0, 1], letterbox)."""
    resized, box = letterbox(to_grayscale(image), out_hw)
    return normalize_intensity(resized, box), box


def to_unet_batch(images: list[np.ndarray]) -> np.ndarray:
    """Stack preprocessed HxW arrays into the U-Nets' NHWC float32 input."""
    return np.stack(images)[..., np.newaxis].astype(np.float32, copy=False)


def letterbox_mask(mask: np.ndarray, out_hw: tuple[int, int] = UNET_INPUT_HW) -> np.ndarray:
    """Ground-truth mask at source size -> boolean mask in the model's letterboxed frame."""
    resized, _ = letterbox(np.asarray(mask, dtype=np.float32), out_hw)
    return resized >= 0.5


def probabilities_to_source_mask(probabilities: np.ndarray, box: Letterbox, threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """U-Net probabilities in the letterboxed frame -> boolean mask at the original image size."""
    content = probabilities[box.top : box.top + box.content_h, box.left : box.left + box.content_w]
    return resize(content, (box.src_h, box.src_w)) >= threshold


def mask_to_classifier_input(mask: np.ndarray, out_hw: tuple[int, int] = CLASSIFIER_INPUT_HW) -> np.ndarray:
    """Binary mask in the U-Net's letterboxed frame -> the classifier's HxW float32 input (box-averaged)."""
    return resize(np.asarray(mask, dtype=np.float32), out_hw, Image.Resampling.BOX)


def preprocessing_spec() -> dict[str, object]:
    """What the manifest records so a consumer can check it runs the same preprocessing."""
    return {
        "name": PREPROCESSING_NAME,
        "module": "spine_core.preprocessing",
        "unet_input_hw": list(UNET_INPUT_HW),
        "classifier_input_hw": list(CLASSIFIER_INPUT_HW),
        "layout": "NHWC",
        "grayscale": "ITU-R 601 luma of RGB; alpha ignored",
        "resize": "letterbox (aspect ratio kept, centred, zero padding), Pillow bilinear",
        "intensity": f"per-image percentiles {LOWER_PERCENTILE}-{UPPER_PERCENTILE} of the content region mapped to 0..1",
        "classifier_input": "binary U-Net mask in the letterboxed frame, box-downsampled",
    }
