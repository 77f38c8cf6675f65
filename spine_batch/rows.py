"""One image -> one flat row: the /classify answer (`spine_engine.answers.classify`), flattened, or the error the API gives.

The flattening is generic over `ClassifyResponse.model_dump()`, so fields the service adds later (scalars,
lists of scalars, nested objects) become columns without a change here: nested objects get dotted names
(`cobb.max_deg`, `rules.mean.label`), lists of objects are kept as JSON text. Three lists are spread per
structure because a table wants them that way: `per_mask` (`p_damaged.Ap_Vertebra`, ...), the view's masks
(`area_px.Ap_Vertebra`, `bbox.Ap_Vertebra`) and `models` (`models` = ["name:version", ...]).
"""

from __future__ import annotations

import base64
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spine_batch.dicomweb import SCHEME, fetch
from spine_batch.sources import Item
from spine_engine import answers
from spine_engine.engine import Engine
from spine_engine.errors import DicomInputError, describe_error
from spine_engine.pacs import DicomwebServer
from spine_engine.policy import MAX_IMAGE_PIXELS, AnalysisPolicy
from spine_engine.study import Film, StudyRequest, canonical_view

# Columns every row has, first in the table (the rest follow the response).
# `host`: the machine (local engine: its hostname) or Ray node (its IP address) that made the row, set by the engine.
ID_COLUMNS = ("path", "study", "view", "status", "error_code", "error_status", "error_message", "host")
STATUS_OK, STATUS_ERROR = "ok", "error"
# Not columns: the encoded masks are files (--masks-dir), timings are the benchmark's business.
_SKIPPED_FIELDS = ("views", "timings_ms")


@dataclass(frozen=True)
class RowOptions:
    """The /classify form fields (and the service settings) every row is made with."""

    policy: AnalysisPolicy = field(default_factory=AnalysisPolicy)  # what runs and decides: the service's settings
    max_pixels: int = MAX_IMAGE_PIXELS
    include_masks: bool = True  # areas and boxes need the masks at the original size
    mask_format: str = "rle"  # cheaper to encode than PNG; the PNGs are only made for --masks-dir
    masks_dir: str | None = None
    default_view: str | None = None  # --view: for files whose manifest row and DICOM header say nothing
    dicomweb: DicomwebServer | None = None  # where `dicomweb:` items are fetched from


def _flatten(prefix: str, value: Any, row: dict[str, Any]) -> None:
    if value is None or (isinstance(value, list) and not value):
        return  # absent or empty: a null in the table (an empty list has no type for the column)
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}", inner, row)
    elif isinstance(value, list) and all(isinstance(v, str | int | float | bool) for v in value):
        row[prefix] = value
    elif isinstance(value, list):
        row[prefix] = json.dumps(value, separators=(",", ":"))
    else:
        row[prefix] = value


def flatten_response(response: dict[str, Any]) -> dict[str, Any]:
    """`ClassifyResponse.model_dump()` -> flat columns (see the module docstring)."""
    row: dict[str, Any] = {}
    for key, value in response.items():
        if key == "per_mask":
            for score in value:
                structure = score["structure"]
                for field, inner in score.items():
                    if field not in ("structure", "view"):
                        _flatten(f"{field}.{structure}", inner, row)
        elif key == "models":
            row["models"] = [f"{m['name']}:{m['version']}" for m in value]
            row["model_precisions"] = [m.get("precision", "fp32") for m in value]
        elif key in _SKIPPED_FIELDS:
            continue
        else:
            _flatten(key, value, row)
    for view in response.get("views") or []:  # one view per row
        row["width"], row["height"], row["format"] = view["width"], view["height"], view["format"]
        for mask in view.get("masks") or []:
            row[f"area_px.{mask['structure']}"] = mask["area_px"]
            row[f"bbox.{mask['structure']}"] = mask["bbox"]
    return row


def error_fields(exc: BaseException) -> dict[str, Any]:
    """The code and message the HTTP API would answer; a file we cannot read, or a bug, says so plainly."""
    described = describe_error(exc)  # every refusal of the service (a PACS that failed included) is a SpineError
    if described is not None:
        status, code, message = described
    elif isinstance(exc, OSError):
        status, code, message = None, "read_error", f"the file cannot be read: {exc}"
    else:
        status, code, message = 500, "internal_error", f"{type(exc).__name__}: {exc}"
    return {"status": STATUS_ERROR, "error_code": code, "error_status": status, "error_message": message}


# Where a row's view came from (column `view_from`): the manifest, the DICOM header, or --view for a file that
# cannot say (JPEG, PNG, TIFF) or a DICOM that does not (the one case worth telling the user about).
VIEW_FROM_MANIFEST, VIEW_FROM_DICOM, VIEW_FROM_OPTION = "manifest", "ViewPosition", "--view"
VIEW_FROM_OPTION_FOR_DICOM = "--view (DICOM without ViewPosition)"


def _view_from(item: Item, data: bytes, filename: str) -> str:
    """Where the front door took the view from (it reads the manifest row, then the DICOM header, then --view)."""
    if canonical_view_or_raw(item.view) is not None:
        return VIEW_FROM_MANIFEST
    if not (data[128:132] == b"DICM" or filename.lower().endswith((".dcm", ".dicom"))):
        return VIEW_FROM_OPTION
    import pydicom  # the header only: no second decode of the pixels

    try:
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    except Exception:
        return VIEW_FROM_OPTION_FOR_DICOM
    return VIEW_FROM_DICOM if str(getattr(header, "ViewPosition", "") or "").strip() else VIEW_FROM_OPTION_FOR_DICOM


def _safe_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key).strip("._") or "image"


def write_masks(masks_dir: Path, key: str, response: dict[str, Any]) -> None:
    """Each mask as a 1-bit PNG (original size), `<masks_dir>/<key with / -> _>/<structure>.png`."""
    folder = masks_dir / _safe_name(key)
    folder.mkdir(parents=True, exist_ok=True)
    for view in response.get("views") or []:
        for mask in view.get("masks") or []:
            if mask["encoding"] == "png":
                (folder / f"{mask['structure']}.png").write_bytes(base64.b64decode(mask["data"]))


def read_item(item: Item, options: RowOptions) -> tuple[bytes, str]:
    """The film's bytes and a file name (the decoder uses the name to try a DICOM without its preamble)."""
    if item.path.startswith(SCHEME):
        if options.dicomweb is None:
            raise DicomInputError(502, "pacs_error", "a DICOMweb item but no DICOMweb server configured")
        return fetch(options.dicomweb, item), "instance.dcm"
    return Path(item.path).read_bytes(), Path(item.path).name


def classify_item(engine: Engine, item: Item, options: RowOptions) -> dict[str, Any]:
    """Never raises: a file that cannot be read, decoded or classified is a row with its error.

    The view: the manifest row's, else the DICOM header's, else --view (the front door reads them in that order).
    """
    row: dict[str, Any] = {"path": item.key, "study": item.study, "view": canonical_view_or_raw(item.view)}
    try:
        data, filename = read_item(item, options)
        include_masks = options.include_masks or options.masks_dir is not None
        request = StudyRequest(
            films=(Film(data=data, filename=filename, view=item.view),),
            policy=options.policy,
            source_masks=include_masks,
            max_pixels=options.max_pixels,
            default_view=options.default_view,
        )
        mask_format = "png" if options.masks_dir else options.mask_format
        response = answers.classify(engine, request, include_masks, mask_format).model_dump(mode="json")
        row["view"] = response["views"][0]["view"]
        row["view_from"] = _view_from(item, data, filename)
        if options.masks_dir:
            write_masks(Path(options.masks_dir), item.key, response)
    except Exception as exc:
        row.update(error_fields(exc))
        return row
    row.update({"status": STATUS_OK, "error_code": None, "error_status": None, "error_message": None})
    row.update(flatten_response(response))
    return row


def canonical_view_or_raw(view: str | None) -> str | None:
    """For an error row's `view`: the canonical name when it is one, else what was given."""
    try:
        return canonical_view(view)
    except Exception:
        return view
