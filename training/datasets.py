"""Readers for the two on-disk dataset layouts and a synthetic generator for tests.

Nothing here imports TensorFlow, so the evaluation CLI can use it with only the serving stack.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from spine_core.structures import CLASSES, STRUCTURES, View

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".dcm")
N_VERTEBRAE = 17


class DatasetError(ValueError):
    """The folder given is not a dataset of the expected layout."""


def load_image(path: Path) -> np.ndarray:
    """An X-ray file -> numpy array (gray or RGB, native dtype)."""
    with Image.open(path) as img:
        if img.mode in ("P", "PA", "CMYK", "LA", "RGBA"):
            img = img.convert("RGB")
        return np.asarray(img)


def load_mask(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=2)
    return arr > 0


# --------------------------------------------------------------------------- course layout


@dataclass
class ViewSample:
    study: str
    label: str  # "Normal" | "Damaged"
    view: View
    image_path: Path
    mask_paths: dict[str, Path] = field(default_factory=dict)

    def image(self) -> np.ndarray:
        return load_image(self.image_path)

    def mask(self, structure: str) -> np.ndarray:
        return load_mask(self.mask_paths[structure])


def _find_xray(view_dir: Path, view: str) -> Path | None:
    candidates = [p for p in sorted(view_dir.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    named = [p for p in candidates if p.stem.upper() == view]
    if named:
        return named[0]
    # Anything that is not a mask file is the radiograph.
    others = [p for p in candidates if p.stem not in STRUCTURES]
    return others[0] if others else None


def read_course_dataset(root: Path) -> list[ViewSample]:
    """`<root>/<Normal|Damaged>/[<study>/]<AP|LAT>/` with the X-ray and one PNG per mask."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root} is not a directory")
    class_dirs = [root / c for c in CLASSES if (root / c).is_dir()]
    if not class_dirs:
        raise DatasetError(f"{root} is not a course-layout dataset: expected sub-folders {' and/or '.join(CLASSES)}")
    samples: list[ViewSample] = []
    for class_dir in class_dirs:
        label = class_dir.name
        # Without the study level the class folder itself holds AP/ and LAT/.
        if any((class_dir / v).is_dir() for v in ("AP", "LAT")):
            study_dirs = [class_dir]
        else:
            study_dirs = sorted(p for p in class_dir.iterdir() if p.is_dir())
        for study_dir in study_dirs:
            study = label if study_dir == class_dir else f"{label}/{study_dir.name}"
            for view in ("AP", "LAT"):
                view_dir = study_dir / view
                if not view_dir.is_dir():
                    continue
                xray = _find_xray(view_dir, view)
                if xray is None:
                    log.warning("study %s view %s has no X-ray image; skipped", study, view)
                    continue
                sample = ViewSample(study=study, label=label, view=view, image_path=xray)  # type: ignore[arg-type]
                for structure, s_view in STRUCTURES.items():
                    if s_view != view:
                        continue
                    mask_path = view_dir / f"{structure}.png"
                    if mask_path.is_file():
                        sample.mask_paths[structure] = mask_path
                    else:
                        log.warning("study %s: mask %s missing; skipped", study, structure)
                samples.append(sample)
    if not samples:
        raise DatasetError(f"{root} has class folders but no <AP|LAT> view folders with an X-ray")
    return samples


# --------------------------------------------------------------------------- AASCE layout


@dataclass
class AasceSample:
    image_path: Path
    landmarks: np.ndarray  # (68, 2) x, y normalised to 0..1
    cobb_angles: np.ndarray  # (3,) degrees

    @property
    def name(self) -> str:
        return self.image_path.name

    @property
    def patient_key(self) -> str:
        return patient_key(self.image_path.name)

    @property
    def max_cobb(self) -> float:
        return float(np.max(self.cobb_angles))

    def image(self) -> np.ndarray:
        return load_image(self.image_path)

    def vertebra_mask(self, height: int, width: int) -> np.ndarray:
        return rasterize_vertebrae(self.landmarks, height, width)

    def corners(self, height: int, width: int) -> np.ndarray:
        """(17, 4, 2) the labelled corners (TL, TR, BL, BR per vertebra, top to bottom) in a height x width film's pixels."""
        return (self.landmarks * [width, height]).reshape(N_VERTEBRAE, 4, 2)


_PATIENT_RE = re.compile(r"^(.*?)(\d+)\s*[A-Za-z]?\s+AP", re.IGNORECASE)


def patient_key(filename: str) -> str:
    """`sunhl-1th-02-Jan-2017-162 A AP.jpg` -> `162`: images sharing the number share a patient."""
    m = _PATIENT_RE.match(Path(filename).stem)
    if m:
        return m.group(2)
    return Path(filename).stem


def top_to_bottom(landmarks: np.ndarray) -> np.ndarray:
    """(68, 2) corners with the 17 vertebrae in top-to-bottom order of their centres (a stable sort).

    24 of the 481 AASCE training rows list a vertebra out of order, 23 of them T1 last (after L5), so a row's
    order is not its levels'. The organisers computed `angles.csv` from the rows as listed
    (`tests/spine_core/test_cobb.py` reads the CSV itself); levels, ends and corner errors need the anatomy's order.
    """
    quads = np.asarray(landmarks).reshape(N_VERTEBRAE, 4, 2)
    order = np.argsort(quads[:, :, 1].mean(axis=1), kind="stable")
    return quads[order].reshape(-1, 2)


def read_aasce_dataset(root: Path) -> list[AasceSample]:
    """`<root>/images/*.jpg` + `<root>/labels/{filenames,landmarks,angles}.csv`, each film's vertebrae top to
    bottom (`top_to_bottom`)."""
    root = Path(root)
    labels = root / "labels"
    files = [labels / n for n in ("filenames.csv", "landmarks.csv", "angles.csv")]
    if not (root / "images").is_dir() or not all(f.is_file() for f in files):
        raise DatasetError(
            f"{root} is not an AASCE-layout dataset: expected images/ and labels/{{filenames,landmarks,angles}}.csv"
        )
    names = [row[0].strip() for row in csv.reader(files[0].open()) if row]
    landmarks = np.loadtxt(files[1], delimiter=",", ndmin=2)
    angles = np.loadtxt(files[2], delimiter=",", ndmin=2)
    if not (len(names) == len(landmarks) == len(angles)):
        raise DatasetError(f"{root}: label CSVs disagree in length ({len(names)}, {len(landmarks)}, {len(angles)})")
    if landmarks.shape[1] != 4 * N_VERTEBRAE * 2:
        raise DatasetError(f"{root}: landmarks.csv rows need {8 * N_VERTEBRAE} numbers, got {landmarks.shape[1]}")
    samples = []
    for name, row, ang in zip(names, landmarks, angles, strict=True):
        path = root / "images" / name
        if not path.is_file():
            log.warning("AASCE image %s listed in filenames.csv is missing; skipped", name)
            continue
        n = 4 * N_VERTEBRAE
        xy = top_to_bottom(np.stack([row[:n], row[n:]], axis=1))
        samples.append(AasceSample(image_path=path, landmarks=xy, cobb_angles=np.asarray(ang, dtype=np.float64)))
    if not samples:
        raise DatasetError(f"{root}: no images found")
    return samples


def vertebra_quads(landmarks: np.ndarray, height: int, width: int) -> Iterator[list[tuple[float, float]]]:
    """Corner landmarks (TL, TR, BL, BR per vertebra, normalised) -> polygons TL->TR->BR->BL in pixels."""
    pts = np.asarray(landmarks, dtype=np.float64) * np.array([width, height])
    for v in range(len(pts) // 4):
        tl, tr, bl, br = pts[4 * v : 4 * v + 4]
        yield [tuple(tl), tuple(tr), tuple(br), tuple(bl)]


def rasterize_vertebrae(landmarks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Fill the 17 vertebral-body quadrilaterals into a boolean HxW mask (`Ap_Vertebra`)."""
    canvas = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(canvas)
    for quad in vertebra_quads(landmarks, height, width):
        draw.polygon(quad, fill=1)
    return np.asarray(canvas, dtype=bool)


def split_by_patient(keys: list[str], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[int], list[int]]:
    """Indices (train, val) such that no patient key appears in both."""
    unique = sorted(set(keys))
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(unique))
    n_val = max(1, round(len(unique) * val_fraction)) if len(unique) > 1 else 0
    val_keys = {unique[i] for i in order[:n_val]}
    train = [i for i, k in enumerate(keys) if k not in val_keys]
    val = [i for i, k in enumerate(keys) if k in val_keys]
    return train, val


# --------------------------------------------------------------------------- synthetic (tests only)


def synthetic_spine(height: int, width: int, seed: int, n_blocks: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """A noisy uint8 'radiograph' with a column of bright blocks and its boolean mask. For tests only."""
    rng = np.random.default_rng(seed)
    img = rng.normal(60, 20, size=(height, width)).clip(0, 255)
    mask = np.zeros((height, width), dtype=bool)
    cx = width / 2 + rng.uniform(-0.1, 0.1) * width
    block_h = height / (n_blocks * 1.6)
    for i in range(n_blocks):
        top = int(height * 0.1 + i * block_h * 1.4)
        left = int(cx - width * 0.15 + rng.uniform(-2, 2))
        bottom, right = int(top + block_h), int(cx + width * 0.15)
        mask[top:bottom, left:right] = True
    img[mask] += 120
    return img.clip(0, 255).astype(np.uint8), mask


def write_synthetic_course_dataset(
    root: Path, size: tuple[int, int] = (96, 48), with_study_level: bool = True, seed: int = 0
) -> Path:
    """A tiny course-layout dataset with every mask, for tests."""
    h, w = size
    for k, label in enumerate(CLASSES):
        for s in range(2 if with_study_level else 1):
            base = root / label / f"study{s}" if with_study_level else root / label
            for view in ("AP", "LAT"):
                d = base / view
                d.mkdir(parents=True, exist_ok=True)
                img, mask = synthetic_spine(h, w, seed + 10 * k + s)
                Image.fromarray(img).convert("RGB").save(d / f"{view}.jpg", quality=95)
                for structure, s_view in STRUCTURES.items():
                    if s_view == view:
                        Image.fromarray(mask).save(d / f"{structure}.png")
    return root


def write_synthetic_aasce_dataset(root: Path, n_patients: int = 6, size: tuple[int, int] = (192, 80), seed: int = 0) -> Path:
    """A tiny AASCE-layout dataset (two images for some patients), for tests."""
    h, w = size
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    names, lm_rows, angle_rows = [], [], []
    for p in range(n_patients):
        for letter in ("A", "B")[: 1 + p % 2]:
            name = f"synthetic-{100 + p} {letter} AP.jpg"
            img = rng.normal(60, 15, size=(h, w))
            xs, ys = [], []
            bend = rng.uniform(-0.15, 0.15)
            for v in range(N_VERTEBRAE):
                top = 0.05 + v * 0.052
                bottom = top + 0.04
                cx = 0.5 + bend * np.sin(np.pi * v / N_VERTEBRAE)
                xs += [cx - 0.12, cx + 0.12, cx - 0.12, cx + 0.12]
                ys += [top, top, bottom, bottom]
            lm = np.array(xs + ys)
            mask = rasterize_vertebrae(np.stack([lm[:68], lm[68:]], axis=1), h, w)
            img[mask] += 120
            Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / "images" / name, quality=95)
            names.append(name)
            lm_rows.append(lm)
            angle_rows.append([abs(bend) * 400, abs(bend) * 100, 5.0])  # about a third >= 40 deg
    (root / "labels" / "filenames.csv").write_text("\n".join(names) + "\n")
    np.savetxt(root / "labels" / "landmarks.csv", np.array(lm_rows), delimiter=",", fmt="%.6f")
    np.savetxt(root / "labels" / "angles.csv", np.array(angle_rows), delimiter=",", fmt="%.4f")
    return root
