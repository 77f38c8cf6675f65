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
# Second stage: a window around the first stage's mask, seen at a higher resolution.
REFINE_INPUT_HW: tuple[int, int] = (1024, 256)
REFINE_MARGIN: tuple[float, float] = (0.05, 0.25)  # of the mask's height / width, added on each side
REFINE_PREPROCESSING_NAME = "spine-crop-percentile-v1"


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
    _normalize_region(array[box.top : box.top + box.content_h, box.left : box.left + box.content_w])
    return array


def _normalize_region(content: np.ndarray) -> None:
    lo, hi = np.percentile(content, [LOWER_PERCENTILE, UPPER_PERCENTILE])
    if hi - lo < 1e-6:
        content[...] = 0.0
    else:
        np.clip((content - lo) / (hi - lo), 0.0, 1.0, out=content)


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


_THRESHOLD_BAND = 5e-7  # > the largest difference two float32 bilinear passes can make (~2 ulp of 1.0)


def source_mask(probabilities: np.ndarray, box: Letterbox, threshold: float = MASK_THRESHOLD) -> np.ndarray:
    """`probabilities_to_source_mask`, resizing only the rows and columns a True pixel can reach (same result).

    Bilinear resampling is a convex combination of the input pixels under its support, so an output
    pixel can reach the threshold only if one of those inputs does: outside the (widened) bounding box of
    the thresholded content, the result is False without computing it. Inside, Pillow resamples with the
    same scale and sample positions as the full resize (its `box` argument).
    """
    content = probabilities[box.top : box.top + box.content_h, box.left : box.left + box.content_w]
    out = np.zeros((box.src_h, box.src_w), dtype=bool)
    hot = content >= threshold
    rows = np.flatnonzero(hot.any(axis=1))
    if rows.size == 0:
        return out
    cols = np.flatnonzero(hot[rows[0] : rows[-1] + 1].any(axis=0))

    def span(lo: int, hi: int, n_in: int, n_out: int) -> tuple[int, int]:
        scale = n_in / n_out
        support = max(scale, 1.0)  # the bilinear filter's support in input pixels (antialiased when shrinking)
        first = int(np.floor((lo - 0.5 - support) / scale - 0.5)) - 1
        last = int(np.ceil((hi + 0.5 + support) / scale - 0.5)) + 1
        return max(first, 0), min(last + 1, n_out)

    y0, y1 = span(int(rows[0]), int(rows[-1]), box.content_h, box.src_h)
    x0, x1 = span(int(cols[0]), int(cols[-1]), box.content_w, box.src_w)
    if (y1 - y0) * (x1 - x0) >= 0.7 * box.src_h * box.src_w:  # nearly everything: the plain resize
        return probabilities_to_source_mask(probabilities, box, threshold)
    sy, sx = box.content_h / box.src_h, box.content_w / box.src_w
    img = Image.fromarray(np.ascontiguousarray(content, dtype=np.float32), mode="F")
    crop = np.asarray(img.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR, box=(x0 * sx, y0 * sy, x1 * sx, y1 * sy)))
    # The crop's sample positions equal the full resize's up to the last bits of a double, so a value can
    # differ by a couple of float32 ulps: where one is that close to the threshold, take the full resize.
    if np.any(np.abs(crop - np.float32(threshold)) <= _THRESHOLD_BAND):
        return probabilities_to_source_mask(probabilities, box, threshold)
    out[y0:y1, x0:x1] = crop >= threshold
    return out


def mask_to_classifier_input(mask: np.ndarray, out_hw: tuple[int, int] = CLASSIFIER_INPUT_HW) -> np.ndarray:
    """Binary mask in the U-Net's letterboxed frame -> the classifier's HxW float32 input (box-averaged)."""
    return resize(np.asarray(mask, dtype=np.float32), out_hw, Image.Resampling.BOX)


@dataclass(frozen=True)
class CropBox:
    """A window of the source image, in source pixels, that a refinement model sees at out_h x out_w.

    The window has the model input's aspect ratio (so the resize is isotropic) and may reach beyond
    the image; what lies outside is zero, like the letterbox padding.
    """

    src_h: int
    src_w: int
    top: int
    left: int
    height: int
    width: int
    out_h: int
    out_w: int

    @classmethod
    def around_mask(
        cls,
        mask: np.ndarray,
        out_hw: tuple[int, int] = REFINE_INPUT_HW,
        margin: tuple[float, float] = REFINE_MARGIN,
    ) -> CropBox | None:
        """The window around a source-size mask's bounding box; None when the mask is empty."""
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        if rows.size == 0:
            return None
        y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
        h = (y1 - y0) * (1 + 2 * margin[0])
        w = (x1 - x0) * (1 + 2 * margin[1])
        aspect = out_hw[0] / out_hw[1]
        h, w = max(h, w * aspect), max(w, h / aspect)
        height, width = max(out_hw[0] // 16, round(h)), max(out_hw[1] // 16, round(w))
        return cls(
            src_h=mask.shape[0],
            src_w=mask.shape[1],
            top=round((y0 + y1) / 2 - height / 2),
            left=round((x0 + x1) / 2 - width / 2),
            height=height,
            width=width,
            out_h=out_hw[0],
            out_w=out_hw[1],
        )

    def _overlap(self) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of the part of the window inside the image, in source pixels."""
        return (
            max(0, self.top),
            min(self.src_h, self.top + self.height),
            max(0, self.left),
            min(self.src_w, self.left + self.width),
        )

    def cut(self, array: np.ndarray) -> np.ndarray:
        """The window of a source-size 2-D array at source resolution, zero outside the image."""
        y0, y1, x0, x1 = self._overlap()
        out = np.zeros((self.height, self.width), dtype=np.float32)
        out[y0 - self.top : y1 - self.top, x0 - self.left : x1 - self.left] = array[y0:y1, x0:x1]
        return out

    def content_in_output(self) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of the image part of the window in the model's output frame."""
        y0, y1, x0, x1 = self._overlap()
        sy, sx = self.out_h / self.height, self.out_w / self.width
        top, bottom = round((y0 - self.top) * sy), round((y1 - self.top) * sy)
        left, right = round((x0 - self.left) * sx), round((x1 - self.left) * sx)
        return top, max(top + 1, bottom), left, max(left + 1, right)

    def as_list(self) -> list[int]:
        return [self.top, self.left, self.height, self.width]


def preprocess_crop(image: np.ndarray, box: CropBox) -> np.ndarray:
    """Decoded radiograph -> the refinement model's HxW float32 input in [0, 1] (the window of `box`).

    Defined as: cut the window out of the image (`box.cut`, zero beyond the image), resize it to the input
    size, keep only the image part. Computed without materialising the window at source resolution (a wide
    first-stage mask makes a window several times the image's size): only the image part, with enough of
    the zero border for the filter, is resampled, at the same sample positions.
    """
    y0, y1, x0, x1 = box.content_in_output()
    out = np.zeros((box.out_h, box.out_w), dtype=np.float32)
    out[y0:y1, x0:x1] = _window_part(to_grayscale(image), box, (y0, y1, x0, x1))
    _normalize_region(out[y0:y1, x0:x1])
    return out


def _window_part(array: np.ndarray, box: CropBox, rect: tuple[int, int, int, int]) -> np.ndarray:
    """`resize(box.cut(array), (out_h, out_w))[y0:y1, x0:x1]` for the output rect over the image."""
    y0, y1, x0, x1 = rect
    sy, sx = box.height / box.out_h, box.width / box.out_w  # source pixels per output pixel
    oy0, oy1, ox0, ox1 = box._overlap()
    # Zero border beyond the image, as wide as the filter can reach from the rect (never wider than the window's).
    reach_y, reach_x = int(np.ceil(2 * sy)) + 2, int(np.ceil(2 * sx)) + 2
    pad_top, pad_bottom = min(reach_y, max(0, -box.top)), min(reach_y, max(0, box.top + box.height - box.src_h))
    pad_left, pad_right = min(reach_x, max(0, -box.left)), min(reach_x, max(0, box.left + box.width - box.src_w))
    part = np.pad(array[oy0:oy1, ox0:ox1].astype(np.float32), ((pad_top, pad_bottom), (pad_left, pad_right)))
    origin_y, origin_x = oy0 - box.top - pad_top, ox0 - box.left - pad_left  # part's (0, 0) in window pixels
    h, w = part.shape
    region = (
        min(max(x0 * sx - origin_x, 0.0), w),
        min(max(y0 * sy - origin_y, 0.0), h),
        min(max(x1 * sx - origin_x, 0.0), w),
        min(max(y1 * sy - origin_y, 0.0), h),
    )
    img = Image.fromarray(np.ascontiguousarray(part), mode="F")
    return np.asarray(img.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR, box=region), dtype=np.float32)


def crop_mask(mask: np.ndarray, box: CropBox) -> np.ndarray:
    """Ground-truth mask at source size -> boolean mask in the refinement model's frame."""
    return resize(box.cut(np.asarray(mask, dtype=np.float32)), (box.out_h, box.out_w)) >= 0.5


def crop_probabilities_to_source(probabilities: np.ndarray, box: CropBox) -> np.ndarray:
    """Refinement probabilities -> float probabilities at the source size (0 outside the window).

    Defined as: resize to the window's size at source resolution, keep the part over the image. Only that
    part is computed (same sample positions, equal to < 1e-4), so a window larger than the image costs no
    more than the image.
    """
    y0, y1, x0, x1 = box._overlap()
    out = np.zeros((box.src_h, box.src_w), dtype=np.float32)
    sy, sx = box.out_h / box.height, box.out_w / box.width  # output pixels per source pixel
    region = ((x0 - box.left) * sx, (y0 - box.top) * sy, (x1 - box.left) * sx, (y1 - box.top) * sy)
    img = Image.fromarray(np.ascontiguousarray(probabilities, dtype=np.float32), mode="F")
    out[y0:y1, x0:x1] = np.asarray(img.resize((x1 - x0, y1 - y0), Image.Resampling.BILINEAR, box=region))
    return out


def crop_probabilities_to_letterbox(probabilities: np.ndarray, box: CropBox, frame: Letterbox) -> np.ndarray:
    """Refinement probabilities -> float probabilities in the first stage's letterboxed frame.

    The classifier reads masks in that frame, so a refined mask reaches it the way a first-stage one does.
    """
    scale = frame.content_h / frame.src_h
    top, left = frame.top + box.top * scale, frame.left + box.left * scale
    h, w = max(1, round(box.height * scale)), max(1, round(box.width * scale))
    window = resize(probabilities, (h, w))
    t, lft = round(top), round(left)
    out = np.zeros((frame.out_h, frame.out_w), dtype=np.float32)
    # Clip the window to the content region: the padding of the letterbox stays background.
    y0, y1 = max(t, frame.top), min(t + h, frame.top + frame.content_h)
    x0, x1 = max(lft, frame.left), min(lft + w, frame.left + frame.content_w)
    if y1 > y0 and x1 > x0:
        out[y0:y1, x0:x1] = window[y0 - t : y1 - t, x0 - lft : x1 - lft]
    return out


def letterbox_probabilities_to_crop(probabilities: np.ndarray, frame: Letterbox, box: CropBox) -> np.ndarray:
    """First-stage probabilities (letterboxed frame) resampled into a refinement window (0 beyond the image)."""
    content = probabilities[frame.top : frame.top + frame.content_h, frame.left : frame.left + frame.content_w]
    sy, sx = frame.content_h / frame.src_h, frame.content_w / frame.src_w
    y0, x0 = box.top * sy, box.left * sx
    y1, x1 = (box.top + box.height) * sy, (box.left + box.width) * sx
    # Pillow samples a region inside the image only: pad the content with zeros to hold the whole window.
    pad_top, pad_left = max(0, int(np.ceil(-y0)) + 1), max(0, int(np.ceil(-x0)) + 1)
    pad_bottom = max(0, int(np.ceil(y1 - content.shape[0])) + 1)
    pad_right = max(0, int(np.ceil(x1 - content.shape[1])) + 1)
    padded = np.pad(content.astype(np.float32), ((pad_top, pad_bottom), (pad_left, pad_right)))
    img = Image.fromarray(np.ascontiguousarray(padded), mode="F")
    region = (x0 + pad_left, y0 + pad_top, x1 + pad_left, y1 + pad_top)
    return np.asarray(img.resize((box.out_w, box.out_h), Image.Resampling.BILINEAR, box=region), dtype=np.float32)


def refine_preprocessing_spec() -> dict[str, object]:
    """What a refinement model's manifest entry records about its input."""
    return {
        "name": REFINE_PREPROCESSING_NAME,
        "module": "spine_core.preprocessing",
        "input_hw": list(REFINE_INPUT_HW),
        "layout": "NHWC",
        "window": (
            f"bounding box of the first stage's source-size mask, widened by {REFINE_MARGIN[0]:.0%} of its height "
            f"and {REFINE_MARGIN[1]:.0%} of its width on each side, then grown to the input's aspect ratio; "
            "zero outside the image"
        ),
        "resize": "window resized isotropically to the input, Pillow bilinear",
        "intensity": f"per-window percentiles {LOWER_PERCENTILE}-{UPPER_PERCENTILE} of the in-image part mapped to 0..1",
    }


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
