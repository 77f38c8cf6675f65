"""Annotated studies on disk, in the course-dataset layout that `spine-train unet --data` reads.

`<root>/<Normal|Damaged>/<study id>/<AP|LAT>/` holds the film (`AP.jpg` / `LAT.jpg`), one 1-bit PNG per
annotated structure (`<Structure>.png`, the film's size) and `annotation.json`, the sidecar: who, when, which
model pre-annotated each mask and what share of its pixels the annotator changed.

A view is written whole or not at all: everything goes to a temporary folder under `<root>/.tmp` (same file
system) and is renamed into place; a re-saved view replaces the old one by two renames. Nothing here imports
the web framework: failures are `AnnotationError`s with the HTTP status and code the API answers.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import re
import shutil
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel, Field, ValidationError

from spine_core.structures import CLASSES, STRUCTURES, View
from spine_engine.decoding import DecodedImage, decode_image
from spine_engine.errors import SpineError
from spine_engine.overlay import display_gray

SIDECAR = "annotation.json"
TMP_DIR = ".tmp"  # not a class folder: dataset readers never look in it
STUDY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_STUDY_ID = re.compile(STUDY_ID_PATTERN)
JPEG_QUALITY = 95  # non-JPEG films (PNG, TIFF, DICOM) are stored as the 8-bit picture the viewer shows
_COMMIT = threading.Lock()  # one writer at a time moves folders into place (one service process per folder)


class AnnotationError(SpineError):
    """A refused annotation upload (the service's one error root: status, code, message)."""

    def __init__(self, status_code: int, code: str, message: str) -> None:
        super().__init__(message, status_code=status_code, code=code)


@dataclass
class AnnotationUpload:
    view: View
    study_class: str
    film: bytes
    film_filename: str | None
    masks: dict[str, bytes]  # structure -> PNG bytes
    annotator: str
    study_id: str | None = None
    patient_id: str | None = None
    provenance: dict[str, dict[str, Any]] = field(default_factory=dict)  # structure -> pre-annotation, edited share


class PreAnnotation(BaseModel):
    source: str = Field(pattern="^(model|empty)$", description="model: the editing started from a model's mask")
    model: str | None = Field(None, max_length=64)
    model_version: str | None = Field(None, max_length=32)
    model_sha256: str | None = Field(None, max_length=64)
    validated: bool | None = Field(None, description="whether that model was validated (false: a demonstration model)")


class Provenance(BaseModel):
    pre_annotation: PreAnnotation | None = None
    edited_pixels: int | None = Field(None, ge=0, description="pixels the annotator changed from the starting mask")
    edited_share: float | None = Field(None, ge=0, le=1, description="edited_pixels / the film's pixels")


def parse_provenance(text: str | None) -> dict[str, dict[str, Any]]:
    """The form's `provenance` field: JSON {structure: Provenance}; a bad one is a 422 naming what is wrong."""
    if not text:
        return {}
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError("an object {structure: {...}}")
        return {str(k): Provenance.model_validate(v).model_dump() for k, v in raw.items()}
    except (ValueError, ValidationError) as exc:
        detail = (
            "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
            if isinstance(exc, ValidationError)
            else str(exc)
        )
        raise AnnotationError(422, "validation_error", f"provenance: {detail}") from exc


def new_study_id() -> str:
    return f"ann-{dt.datetime.now(dt.UTC):%Y%m%d}-{uuid.uuid4().hex[:8]}"


def check_study_id(study_id: str) -> str:
    if not _STUDY_ID.match(study_id):
        raise AnnotationError(
            422, "invalid_study_id", "study_id: 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return study_id


def _mask_bits(structure: str, data: bytes, film: DecodedImage) -> np.ndarray:
    """A PNG mask -> bool (white = structure); it must be a PNG of the film's size."""
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        raise AnnotationError(415, "unsupported_media_type", f"mask {structure}: not a PNG")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.size != (film.width, film.height):
                raise AnnotationError(
                    422,
                    "mask_size_mismatch",
                    f"mask {structure} is {img.width}x{img.height}, the film {film.width}x{film.height}: masks are at film size",
                )
            img.load()
            # Alpha counts as background where transparent (a canvas export); gray >= 128 is the structure.
            gray = np.asarray(img.convert("LA"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise AnnotationError(422, "corrupt_image", f"mask {structure}: unreadable PNG ({exc})") from exc
    return (gray[..., 0] >= 128) & (gray[..., 1] >= 128)


def _film_bytes(upload: AnnotationUpload, film: DecodedImage) -> tuple[bytes, str]:
    """What is stored as <VIEW>.jpg: a JPEG as uploaded (bit for bit), anything else as the 8-bit picture the viewer shows."""
    if film.format in ("JPEG", "MPO"):
        return upload.film, "the uploaded JPEG, unchanged"
    buf = io.BytesIO()
    Image.fromarray(display_gray(film.pixels), mode="L").save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue(), f"{film.format} converted to 8-bit gray (0.5-99.5 percentile window) JPEG, quality {JPEG_QUALITY}"


def _check(upload: AnnotationUpload) -> None:
    if upload.study_class not in CLASSES:
        raise AnnotationError(422, "validation_error", f"study_class: one of {', '.join(CLASSES)}")
    if not upload.annotator.strip():
        raise AnnotationError(422, "validation_error", "annotator: who drew the masks (a name or an id)")
    if not upload.masks:
        raise AnnotationError(422, "validation_error", "masks: at least one <Structure>.png")
    for structure in upload.masks:
        if STRUCTURES.get(structure) != upload.view:
            names = ", ".join(s for s, v in STRUCTURES.items() if v == upload.view)
            raise AnnotationError(422, "unknown_structure", f"mask {structure!r} is not a {upload.view} structure ({names})")
    for structure in upload.provenance:
        if structure not in upload.masks:
            raise AnnotationError(422, "validation_error", f"provenance names {structure!r}, which has no mask in this upload")


# Called with the upload, the decoded film's format and the masks once the view is written to its temporary folder
# and before it moves into place; what it returns is recorded in the sidecar (`dicom`). It may raise: then nothing is
# kept. POST /annotations stores a DICOM SEG with it when SPINE_DICOMWEB_URL is set.
Publish = Callable[[AnnotationUpload, str, dict[str, np.ndarray]], dict[str, Any]]


def _write_view(
    folder: Path, upload: AnnotationUpload, max_pixels: int, saved_at: str, publish: Publish | None = None
) -> dict[str, Any]:
    film = decode_image(upload.film, max_pixels, upload.film_filename)
    bits = {s: _mask_bits(s, data, film) for s, data in upload.masks.items()}  # every mask checked before any write
    folder.mkdir(parents=True)
    data, stored_as = _film_bytes(upload, film)
    (folder / f"{upload.view}.jpg").write_bytes(data)
    structures = {}
    for structure, mask in bits.items():
        Image.fromarray(mask).save(folder / f"{structure}.png", optimize=True)  # mode "1": 1-bit, as the course masks
        structures[structure] = {
            "file": f"{structure}.png",
            "pixels": int(mask.sum()),
            "share_of_film": round(float(mask.mean()), 6),
            **upload.provenance.get(structure, {"pre_annotation": None}),
        }
    sidecar = {
        "study_id": upload.study_id,
        "class": upload.study_class,
        "view": upload.view,
        "annotator": upload.annotator.strip(),
        "patient_id": upload.patient_id,
        "saved_at": saved_at,
        "film": {
            "file": f"{upload.view}.jpg",
            "width": film.width,
            "height": film.height,
            "uploaded_format": film.format,
            "uploaded_filename": upload.film_filename,
            "stored_as": stored_as,
        },
        "structures": structures,
    }
    if publish is not None:
        sidecar["dicom"] = publish(upload, film.format, bits)
    (folder / SIDECAR).write_text(json.dumps(sidecar, indent=1) + "\n")
    return sidecar


def find_study(root: Path, study_id: str) -> Path | None:
    for label in CLASSES:
        folder = root / label / study_id
        if folder.is_dir():
            return folder
    return None


def save_annotation(root: Path, upload: AnnotationUpload, max_pixels: int, publish: Publish | None = None) -> dict[str, Any]:
    """Validate, write to a temporary folder, then rename into `<root>/<class>/<study>/<view>`; -> the sidecar."""
    _check(upload)
    upload.study_id = check_study_id(upload.study_id) if upload.study_id else new_study_id()
    saved_at = dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()
    tmp = root / TMP_DIR / uuid.uuid4().hex
    try:
        sidecar = _write_view(tmp / upload.view, upload, max_pixels, saved_at, publish)
        with _COMMIT:
            existing = find_study(root, upload.study_id)
            if existing is not None and existing.parent.name != upload.study_class:
                raise AnnotationError(
                    409,
                    "annotation_conflict",
                    f"study {upload.study_id} is already saved as {existing.parent.name}; a study has one class",
                )
            study = root / upload.study_class / upload.study_id
            target = study / upload.view
            study.mkdir(parents=True, exist_ok=True)
            if target.exists():  # re-saved: the old view moves out, the new one in, the old one is deleted
                target.rename(tmp / "replaced")
            (tmp / upload.view).rename(target)
        return sidecar
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_study(root: Path, study_id: str) -> dict[str, Any] | None:
    """Everything known about one study: its class, and each view's sidecar (or its files when it has none)."""
    folder = find_study(root, check_study_id(study_id))
    if folder is None:
        return None
    views: dict[str, Any] = {}
    for view in ("AP", "LAT"):
        view_dir = folder / view
        if not view_dir.is_dir():
            continue
        sidecar = view_dir / SIDECAR
        if sidecar.is_file():
            views[view] = json.loads(sidecar.read_text())
        else:  # a study copied in from the course data set: no sidecar, its files say what it holds
            views[view] = {
                "structures": {p.stem: {"file": p.name} for p in sorted(view_dir.glob("*.png")) if p.stem in STRUCTURES}
            }
    return {"study_id": study_id, "class": folder.parent.name, "views": views}


def list_studies(root: Path) -> list[dict[str, Any]]:
    """A summary of every study under `root`, sorted by class then id."""
    out = []
    for label in CLASSES:
        class_dir = root / label
        if not class_dir.is_dir():
            continue
        for folder in sorted(p for p in class_dir.iterdir() if p.is_dir() and _STUDY_ID.match(p.name)):
            study = read_study(root, folder.name)
            if study is None or not study["views"]:
                continue
            out.append(
                {
                    "study_id": study["study_id"],
                    "class": study["class"],
                    "views": {
                        v: {
                            "structures": sorted(info.get("structures", {})),
                            "annotator": info.get("annotator"),
                            "saved_at": info.get("saved_at"),
                        }
                        for v, info in study["views"].items()
                    },
                }
            )
    return out
