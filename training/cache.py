"""Preprocess a dataset once into a compact .npz of model-frame arrays.

Training reads these caches instead of decoding multi-megapixel JPEGs every epoch, and a cache is
small enough to travel to a GPU machine. Images are stored as the output of
`spine_core.preprocessing.preprocess_image` quantised to uint8 (error <= 1/510), masks as
`letterbox_mask` bits, so training sees exactly what the service computes.
"""

from __future__ import annotations

import io
import itertools
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from spine_core.preprocessing import (
    REFINE_INPUT_HW,
    UNET_INPUT_HW,
    CropBox,
    crop_mask,
    letterbox_mask,
    preprocess_crop,
    preprocess_image,
)
from training.datasets import AasceSample, read_aasce_dataset, read_course_dataset

log = logging.getLogger(__name__)


def quantize(x: np.ndarray) -> np.ndarray:
    return np.round(x * 255.0).astype(np.uint8)


def dequantize(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / 255.0


def _aasce_item(sample: AasceSample, out_hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    image = sample.image()
    x, _ = preprocess_image(image, out_hw)
    mask = sample.vertebra_mask(image.shape[0], image.shape[1])
    return quantize(x), letterbox_mask(mask, out_hw)


def _jpeg(image: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def image_arrays(images: list[np.ndarray], jpeg_quality: int | None) -> dict[str, np.ndarray]:
    """uint8 frames as one stacked array, or JPEG-encoded into one byte array with offsets."""
    if jpeg_quality is None:
        return {"images": np.stack(images)}
    encoded = [_jpeg(image, jpeg_quality) for image in images]
    return {
        "images": np.frombuffer(b"".join(encoded), dtype=np.uint8),
        "jpeg_offsets": np.cumsum([0] + [len(e) for e in encoded]),
    }


def build_aasce_cache(
    data_dir: Path, out_path: Path, out_hw: tuple[int, int] = UNET_INPUT_HW, workers: int = 2, jpeg_quality: int | None = None
) -> Path:
    """jpeg_quality stores the preprocessed images as JPEG (4x smaller, for carrying large frames to a GPU)."""
    samples = read_aasce_dataset(data_dir)
    with ThreadPoolExecutor(workers) as pool:
        items = list(pool.map(lambda s: _aasce_item(s, out_hw), samples))
    masks = np.stack([i[1] for i in items])
    np.savez_compressed(
        out_path,
        **image_arrays([i[0] for i in items], jpeg_quality),
        masks=np.packbits(masks, axis=-1),
        mask_width=np.array(out_hw[1]),
        names=np.array([s.name for s in samples]),
        patient_keys=np.array([s.patient_key for s in samples]),
        cobb=np.stack([s.cobb_angles for s in samples]),
    )
    log.info("AASCE cache: %d images -> %s (%.1f MB)", len(samples), out_path, out_path.stat().st_size / 1e6)
    return out_path


def build_course_cache(data_dir: Path, out_path: Path, out_hw: tuple[int, int] = UNET_INPUT_HW) -> Path:
    """Per view sample: image + every mask present (structures missing are all-False with has_<s>=False)."""
    arrays: dict[str, np.ndarray] = {}
    rows = []
    for k, sample in enumerate(read_course_dataset(data_dir)):
        x, _ = preprocess_image(sample.image(), out_hw)
        arrays[f"image_{k}"] = quantize(x)
        for structure in sample.mask_paths:
            arrays[f"mask_{k}_{structure}"] = np.packbits(letterbox_mask(sample.mask(structure), out_hw), axis=-1)
        rows.append((sample.study, sample.label, sample.view))
    np.savez_compressed(out_path, meta=np.array(rows), mask_width=np.array(out_hw[1]), **arrays)
    return out_path


def load_aasce_cache(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as z:
        data = {k: z[k] for k in z.files}
    data["masks"] = np.unpackbits(data["masks"], axis=-1, count=int(data["mask_width"])).astype(bool)
    if "jpeg_offsets" in data:
        blob, offsets = data.pop("images").tobytes(), data.pop("jpeg_offsets")
        data["images"] = np.stack([np.asarray(Image.open(io.BytesIO(blob[a:b]))) for a, b in itertools.pairwise(offsets)])
    return data


def first_cached_images(path: Path, n: int = 4) -> np.ndarray:
    """The first n model-frame images of an AASCE cache as float NHWC: real inputs for parity checks."""
    return dequantize(load_aasce_cache(path)["images"][:n])[..., np.newaxis]


def load_course_cache(path: Path) -> list[dict]:
    """-> [{study, label, view, image (H,W) uint8, masks {structure: bool (H,W)}}]"""
    with np.load(path) as z:
        width = int(z["mask_width"])
        out = []
        for k, (study, label, view) in enumerate(z["meta"]):
            masks = {
                name.split("_", 2)[2]: np.unpackbits(z[name], axis=-1, count=width).astype(bool)
                for name in z.files
                if name.startswith(f"mask_{k}_")
            }
            out.append({"study": str(study), "label": str(label), "view": str(view), "image": z[f"image_{k}"], "masks": masks})
    return out


def build_refine_cache(
    data_dir: Path,
    out_path: Path,
    models_dir: Path,
    out_hw: tuple[int, int] = REFINE_INPUT_HW,
    threads: int | None = None,
    jpeg_quality: int | None = None,
) -> Path:
    """AASCE windows for the second-stage `Ap_Vertebra` model, cut where the exported first stage puts them.

    The window comes from the first stage's own mask (run through the service's registry), not from
    the ground truth, so training sees the windows the service will cut, misplacements included.
    An image where the first stage finds nothing gets the whole image as its window.
    """
    from spine_engine import ModelRegistry, Segmenter  # onnxruntime, no Keras: the cache step runs anywhere

    registry = ModelRegistry.load(
        models_dir, providers=["CPUExecutionProvider"], intra_op_threads=threads, warmup=False, use_refinement=False
    )
    stage1 = registry.segmentation_model("Ap_Vertebra")
    if stage1 is None:
        raise SystemExit(f"{models_dir} has no loadable Ap_Vertebra model: {registry.problems}")
    samples = read_aasce_dataset(data_dir)
    images, masks, boxes, fallbacks = [], [], [], 0
    for sample in tqdm(samples, desc="refine cache", mininterval=5.0):
        image = sample.image()
        coarse = Segmenter(registry).segment(image, "AP", ["Ap_Vertebra"]).masks["Ap_Vertebra"]
        box = CropBox.around_mask(coarse, out_hw)
        if box is None:
            fallbacks += 1
            box = CropBox.around_mask(np.ones(coarse.shape, dtype=bool), out_hw, margin=(0.0, 0.0))
        images.append(quantize(preprocess_crop(image, box)))
        masks.append(crop_mask(sample.vertebra_mask(image.shape[0], image.shape[1]), box))
        boxes.append([box.src_h, box.src_w, *box.as_list()])
    if fallbacks:
        log.warning("%d image(s) without a first-stage mask: whole-image windows", fallbacks)
    np.savez_compressed(
        out_path,
        **image_arrays(images, jpeg_quality),
        masks=np.packbits(np.stack(masks), axis=-1),
        mask_width=np.array(out_hw[1]),
        boxes=np.array(boxes),
        stage1_sha256=np.array(stage1.sha256),
        names=np.array([s.name for s in samples]),
        patient_keys=np.array([s.patient_key for s in samples]),
        cobb=np.stack([s.cobb_angles for s in samples]),
    )
    log.info("refine cache: %d windows -> %s (%.1f MB)", len(samples), out_path, out_path.stat().st_size / 1e6)
    return out_path
