"""What to analyse: a folder walked lazily, or a CSV manifest `path,view[,study]`, as a stream of Items.

Nothing here holds the whole archive in memory: folders are walked one directory at a time (sorted, so
two runs see the same order) and manifests are read row by row.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

# Extensions taken from a folder; files without an extension are taken when they carry the DICOM magic.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".dcm", ".dicom")
_DICOM_MAGIC_OFFSET = 128


@dataclass(frozen=True)
class Item:
    """One image to classify. `key` is what the results' `path` column holds (and what resuming skips)."""

    key: str
    path: str  # where to read the bytes
    view: str | None = None  # AP/LAT as the manifest says; None: the DICOM's ViewPosition, else --view
    study: str | None = None

    def as_dict(self) -> dict[str, str | None]:
        return asdict(self)


class SourceError(ValueError):
    """The source as a whole cannot be read (a missing folder, a manifest without a path column)."""


def _has_dicom_magic(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(_DICOM_MAGIC_OFFSET + 4)
    except OSError:
        return False
    return head[_DICOM_MAGIC_OFFSET:] == b"DICM"


def _is_image_file(path: str, name: str) -> bool:
    suffix = os.path.splitext(name)[1].lower()
    if suffix in IMAGE_SUFFIXES:
        return True
    return suffix == "" and _has_dicom_magic(path)


def walk_folder(root: Path) -> Iterator[str]:
    """Relative POSIX paths of the image files under `root`, depth first, each directory sorted.

    Hidden entries (leading dot) are skipped, so a results folder of ours inside the source is not read.
    """
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            with os.scandir(root / rel_dir) as it:
                entries = sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
        except OSError:
            continue  # an unreadable sub-folder is not the end of the run
        subdirs = []
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(rel)
            elif entry.is_file() and _is_image_file(entry.path, entry.name):
                yield rel
        stack.extend(reversed(subdirs))


def folder_items(root: Path) -> Iterator[Item]:
    """Views are left open: the DICOM's ViewPosition, else --view (RowOptions.default_view), decide."""
    if not root.is_dir():
        raise SourceError(f"{root} is not a folder")
    for rel in walk_folder(root):
        yield Item(key=rel, path=str(root / rel))


def manifest_items(manifest: Path) -> Iterator[Item]:
    """Rows `path,view[,study]` (a header row naming them; paths relative to the manifest's folder).

    A blank view falls back to the DICOM's ViewPosition, then to --view.
    """
    base = manifest.parent
    with manifest.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = [name.strip().lower() for name in reader.fieldnames or []]
        if "path" not in fields:
            raise SourceError(f"{manifest}: the header must name a `path` column (and `view`, optionally `study`)")
        reader.fieldnames = fields
        for row in reader:
            rel = (row.get("path") or "").strip()
            if not rel:
                continue
            item_view = (row.get("view") or "").strip() or None
            study = (row.get("study") or "").strip() or None
            yield Item(key=rel, path=str(base / rel), view=item_view, study=study)


def source_items(source: Path) -> Iterator[Item]:
    """A folder, or a .csv manifest."""
    if source.is_file() and source.suffix.lower() == ".csv":
        return manifest_items(source)
    if not source.exists():
        raise SourceError(f"{source} does not exist")
    return folder_items(source)
