"""Training data from a course-layout folder (the course data set, or SPINE_ANNOTATIONS_DIR): one structure,
patient-grouped split.

`spine-train unet --structure S --data DIR` lands here. Studies are grouped by patient (the sidecar's
`patient_id` when the annotator gave one, else the study itself) and split with the same rule as the AASCE films
(`training.splits`: validation fraction 0.2, seed 0), so no patient is on both sides. The preprocessed arrays are
cached in the run folder and rebuilt when the folder's studies change; the held-out studies are written to
`run_info.json`, where `spine-evaluate course --heldout-of RUN` reads them.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from spine_core.preprocessing import UNET_INPUT_HW
from training.cache import build_course_cache, load_course_cache
from training.datasets import ViewSample, read_course_dataset, split_by_patient
from training.splits import SPLIT_SEED, VAL_FRACTION

log = logging.getLogger(__name__)

SIDECAR = "annotation.json"  # written by the service (service/annotations.py) beside each annotated view
CACHE_NAME = "data.npz"


@dataclass
class StructureData:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    train_studies: list[str]
    heldout_studies: list[str]
    cache: Path
    description: str
    split: str


def patient_of(sample: ViewSample) -> str:
    """The patient key of a study: the annotator's `patient_id` when a sidecar gives one, else the study."""
    sidecar = sample.image_path.parent / SIDECAR
    if sidecar.is_file():
        patient = json.loads(sidecar.read_text()).get("patient_id")
        if patient:
            return f"patient:{patient}"
    return f"study:{sample.study}"


def _fingerprint(samples: list[ViewSample], hw: tuple[int, int]) -> str:
    """Changes when a study, a file or its modification time changes (the cache is then rebuilt)."""
    digest = hashlib.sha256(repr(hw).encode())
    for s in samples:
        for path in [s.image_path, *s.mask_paths.values()]:
            digest.update(f"{path}:{path.stat().st_mtime_ns}:{path.stat().st_size}".encode())
    return digest.hexdigest()


def split_studies(samples: list[ViewSample], structure: str) -> tuple[list[str], list[str]]:
    """(train, held-out) study names among the studies with a `structure` mask, grouped by patient."""
    studies = sorted({s.study for s in samples if structure in s.mask_paths})
    patients = {s.study: patient_of(s) for s in samples if s.study in studies}
    train_idx, val_idx = split_by_patient([patients[s] for s in studies], VAL_FRACTION, SPLIT_SEED)
    return [studies[i] for i in train_idx], [studies[i] for i in val_idx]


def structure_data(
    data_dir: Path, structure: str, run_dir: Path, repeat: int, hw: tuple[int, int] = UNET_INPUT_HW
) -> StructureData:
    samples = read_course_dataset(data_dir)
    train_studies, heldout = split_studies(samples, structure)
    if not train_studies:
        raise SystemExit(f"no study in {data_dir} has a {structure} mask")
    run_dir.mkdir(parents=True, exist_ok=True)
    cache, stamp = run_dir / CACHE_NAME, run_dir / f"{CACHE_NAME}.fingerprint"
    fingerprint = _fingerprint(samples, hw)
    if not (cache.is_file() and stamp.is_file() and stamp.read_text() == fingerprint):
        log.info("preprocessing %d views of %s -> %s", len(samples), data_dir, cache)
        build_course_cache(data_dir, cache, hw)
        stamp.write_text(fingerprint)
    rows = [r for r in load_course_cache(cache) if structure in r["masks"]]
    train = [r for r in rows if r["study"] in train_studies]
    val = [r for r in rows if r["study"] in heldout]
    if not val:
        log.warning("%s: one patient only, nothing held out; the validation figure is on training images", structure)
        val = train
    # Few studies: repeat each so an epoch holds `repeat` differently augmented copies.
    x_tr = np.repeat(np.stack([r["image"] for r in train]), repeat, axis=0)
    y_tr = np.repeat(np.stack([r["masks"][structure] for r in train]), repeat, axis=0)
    description = (
        f"course-layout folder {data_dir.name}: {len(train_studies)} training studies with a {structure} mask "
        f"({len(train)} image(s)), augmented"
    )
    split = (
        f"patient-grouped (sidecar patient_id, else the study), validation fraction {VAL_FRACTION}, seed {SPLIT_SEED}: "
        f"{len(train_studies)} train / {len(heldout)} held-out studies"
    )
    return StructureData(
        x_tr,
        y_tr,
        np.stack([r["image"] for r in val]),
        np.stack([r["masks"][structure] for r in val]),
        train_studies,
        heldout,
        cache,
        description,
        split,
    )
