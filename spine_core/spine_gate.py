""" "I cannot tell": decide from measurable signals whether an AP upload shows a spine the models can read.

A blank image, noise, a photograph, a CT slice or a spine drawn too small must not get a confident
Normal/Damaged. The gate looks at two things the service has anyway:

- the `Ap_Vertebra` mask in the U-Net's letterboxed model frame (512x256): a full AP spine film gives a
  column of vertebral bodies running most of the film's height (T1..L5), several separate components,
  covering a few percent of the image;
- simple statistics of the image as the U-Net sees it (letterboxed, percentile-normalised): its
  contrast (a near-constant image has none) and the share of its variation that is pixel-to-pixel
  (noise and text are mostly that; a synthetic gradient has none; radiographs sit in between);
- for DICOM uploads, the Modality: a CT or MR slice, a scintigram or an ultrasound image is not a radiograph.

Each signal has a bound; an input is refused (`code: no_spine_found`) when any bound fails. The bounds
were set from the committed models' masks on the 481 AASCE training films and the 5 full-body films
(`scripts/gate_check.py` prints the weakest real film's value beside each bound and the closest
not-a-spine input): each sits well inside the range of the real films, so a real film is refused only
when it is far from anything the models were trained on. See docs/trust.md.

numpy and scipy only; serving and scripts call `check_spine` after segmentation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from spine_core.preprocessing import UNET_INPUT_HW, Letterbox, preprocess_image

NO_SPINE_FOUND = "no_spine_found"
# DICOM Modality values that are not projection radiographs (a CT or MR slice, a scintigram, ultrasound,
# a mammogram, photographs and microscopy). Unknown or absent modality (PNG, JPEG) is not held against an input.
NOT_RADIOGRAPH_MODALITIES = frozenset({"CT", "MR", "NM", "PT", "US", "MG", "XC", "OP", "SM", "ES", "IVUS", "OCT"})
MASK_SIGNALS = ("vertical_extent", "area_fraction", "components")
MIN_COMPONENT_PX = 20  # smaller specks in the model frame are not counted as vertebrae


@dataclass(frozen=True)
class GateThresholds:
    """Bounds on each signal (features of the same name). Measured values: docs/trust.md."""

    # Mask bounds leave room for full-body films whose mask keeps only the vertebra chain (T1-L5 spans
    # about 0.55-0.65 of a skull-to-pelvis film): with the skull and sacrum blobs dropped, the 5 large
    # films measure extent >= 0.53, area >= 0.037, components >= 7 (docs/trust.md).
    min_vertical_extent: float = 0.40  # mask rows span / content height; real films >= 0.78 (0.53 chain only)
    min_area_fraction: float = 0.015  # mask pixels / content pixels; real films >= 0.049 (0.037 chain only)
    min_components: int = 4  # components of >= MIN_COMPONENT_PX pixels; real films >= 5
    min_contrast: float = 0.05  # std of the normalised image; real films >= 0.17
    min_high_frequency: float = 0.004  # pixel-to-pixel share of variation; real films >= 0.011
    max_high_frequency: float = 0.40  # real films <= 0.13; noise and text 0.7-0.85
    # The landmark model's own view of the spine, which can stand in for the mask signals (a small, noisy
    # film whose mask is patchy): this many vertebrae seen (not interpolated), spanning this share of the
    # film's height, with this mean heatmap peak. docs/trust.md has the measured values.
    min_landmark_vertebrae: int = 12
    min_landmark_extent: float = 0.40
    min_landmark_score: float = 0.30


DEFAULT_THRESHOLDS = GateThresholds()


@dataclass(frozen=True)
class GateResult:
    ok: bool
    code: str | None  # NO_SPINE_FOUND when not ok
    reason: str  # plain words for the client
    features: dict[str, float]
    failed: list[str] = field(default_factory=list)  # names of the signals that failed


def _content(array: np.ndarray, letterbox: Letterbox | None) -> np.ndarray:
    if letterbox is None:
        return array
    return array[letterbox.top : letterbox.top + letterbox.content_h, letterbox.left : letterbox.left + letterbox.content_w]


def mask_features(model_frame_mask: np.ndarray, letterbox: Letterbox | None = None) -> dict[str, float]:
    """Size and extent of a vertebra mask, relative to the image's region of the model frame."""
    content = _content(np.asarray(model_frame_mask, dtype=bool), letterbox)
    height, width = content.shape
    rows = np.flatnonzero(content.any(axis=1))
    labels, n = ndimage.label(content)
    sizes = np.bincount(labels.ravel())[1:] if n else np.zeros(0, dtype=int)
    return {
        "vertical_extent": float((rows[-1] - rows[0] + 1) / height) if rows.size else 0.0,
        "area_fraction": float(content.sum() / (height * width)),
        "components": float(np.count_nonzero(sizes >= MIN_COMPONENT_PX)),
    }


def frame_statistics(frame: np.ndarray, letterbox: Letterbox | None = None) -> dict[str, float]:
    """Contrast and high-frequency share of a preprocessed (percentile-normalised) model-frame image."""
    content = _content(np.asarray(frame, dtype=np.float64), letterbox)
    contrast = float(content.std())
    if contrast < 1e-9:
        return {"contrast": 0.0, "high_frequency": 0.0}
    detail = content - ndimage.uniform_filter(content, size=3, mode="reflect")
    return {"contrast": contrast, "high_frequency": float(detail.std() / contrast)}


def image_statistics(pixels: np.ndarray, out_hw: tuple[int, int] = UNET_INPUT_HW) -> dict[str, float]:
    """`frame_statistics` of a decoded image as the U-Net sees it. Large images are first subsampled by an
    integer stride (to at least twice the frame) so a 6000-row film costs about what a small one does."""
    arr = np.asarray(pixels)
    stride = max(1, min(arr.shape[0] // (2 * out_hw[0]), arr.shape[1] // (2 * out_hw[1])))
    frame, box = preprocess_image(arr[::stride, ::stride], out_hw)
    return frame_statistics(frame, box)


def _failures(features: dict[str, float], t: GateThresholds, modality: str | None) -> list[tuple[str, str]]:
    """(signal, plain-words reason) for each bound the features break, image signals first."""
    failed: list[tuple[str, str]] = []
    if modality is not None and modality.strip().upper() in NOT_RADIOGRAPH_MODALITIES:
        failed.append(("modality", f"the DICOM file is a {modality.strip().upper()} image, not a radiograph"))
    if "contrast" in features:
        if features["contrast"] < t.min_contrast:
            failed.append(("contrast", "the image is almost uniform"))
        elif features["high_frequency"] > t.max_high_frequency:
            failed.append(("high_frequency", "the image is mostly pixel-to-pixel noise or fine pattern, not a radiograph"))
        elif features["high_frequency"] < t.min_high_frequency:
            failed.append(("high_frequency", "the image is a smooth shading with no structure, not a radiograph"))
    extent, area = features["vertical_extent"], features["area_fraction"]
    if extent < t.min_vertical_extent:
        failed.append(
            (
                "vertical_extent",
                f"the vertebrae found span {extent:.0%} of the image's height; "
                f"an AP spine film (T1 to L5) spans at least {t.min_vertical_extent:.0%}",
            )
        )
    if area < t.min_area_fraction:
        failed.append(
            ("area_fraction", f"vertebrae cover {area:.1%} of the image; on an AP spine film at least {t.min_area_fraction:.1%}")
        )
    if features["components"] < t.min_components:
        failed.append(("components", f"{features['components']:.0f} separate vertebra-like regions found, not a column"))
    return failed


def landmarks_show_spine(features: dict[str, float], t: GateThresholds = DEFAULT_THRESHOLDS) -> bool:
    return (
        features.get("landmark_vertebrae", 0.0) >= t.min_landmark_vertebrae
        and features.get("landmark_extent", 0.0) >= t.min_landmark_extent
        and features.get("landmark_score", 0.0) >= t.min_landmark_score
    )


def check_spine(
    model_frame_mask: np.ndarray,
    image_stats: dict[str, float] | None = None,
    letterbox: Letterbox | None = None,
    modality: str | None = None,
    thresholds: GateThresholds = DEFAULT_THRESHOLDS,
    landmark_features: dict[str, float] | None = None,
) -> GateResult:
    """Whether the `Ap_Vertebra` mask (model frame) and, if given, the image's statistics show a readable
    AP spine. `letterbox` (SegmentationResult.letterbox) restricts the mask signals to the image's region
    of the frame; `image_stats` comes from `image_statistics(decoded pixels)`; `modality` is a DICOM
    upload's Modality (0008,0060), None for other formats; `landmark_features` (landmark_vertebrae,
    landmark_extent, landmark_score) can stand in for the mask's signals, never for the image's."""
    features = mask_features(model_frame_mask, letterbox)
    if image_stats is not None:
        features.update({k: float(image_stats[k]) for k in ("contrast", "high_frequency")})
    failed = _failures(features, thresholds, modality)
    if landmark_features:
        features.update(landmark_features)
        if landmarks_show_spine(features, thresholds):  # the landmark model sees the column the mask missed
            failed = [(name, why) for name, why in failed if name not in MASK_SIGNALS]
    if not failed:
        return GateResult(True, None, "a column of vertebrae was found", features)
    reason = "no spine found: " + "; ".join(why for _, why in failed)
    return GateResult(False, NO_SPINE_FOUND, reason, features, [name for name, _ in failed])
