"""The source radiograph of a DICOM result: read it, check it is one this service can answer with SEG/SR.

Every refusal is a `spine_engine.errors.SpineError` (`DicomInputError`, `NotARadiographError`) with an HTTP
status, a stable code and a sentence for the caller; nothing here imports the web framework.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager

from pydicom import Dataset, dcmread
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from spine_engine.decoding import DICOM_MAGIC_OFFSET, CorruptImageError, NoPixelDataError, radiograph_problem, sop_class_name
from spine_engine.errors import DicomInputError, NotARadiographError

# The identifiers a SEG and an SR must copy from their source (the Study, Series and SOP Instance they reference).
REQUIRED_UIDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


def read_dataset(data: bytes) -> Dataset:
    """Uploaded bytes -> pydicom Dataset (pixel data not decoded yet); 415 when it is not DICOM at all."""
    if not data:
        raise DicomInputError(422, "empty_file", "the uploaded file is empty")
    if data[DICOM_MAGIC_OFFSET : DICOM_MAGIC_OFFSET + 4] != b"DICM":
        raise DicomInputError(
            415,
            "not_dicom",
            "the file is not a DICOM Part 10 file (no 'DICM' marker at byte 128); this endpoint takes one DICOM radiograph",
        )
    try:
        return dcmread(io.BytesIO(data))
    except InvalidDicomError as exc:
        raise DicomInputError(415, "not_dicom", f"the file is not a DICOM file: {exc}") from exc
    except Exception as exc:
        raise CorruptImageError(f"the DICOM file cannot be parsed: {exc}") from exc  # as /classify says for the same file


def check_radiograph(ds: Dataset) -> None:
    """A single-frame CR/DX/RG image with pixel data and the UIDs its SEG/SR will reference, else a 422."""
    if "PixelData" not in ds:
        raise NoPixelDataError(f"the DICOM object ({sop_class_name(ds.get('SOPClassUID'))}) has no pixel data")
    problem = radiograph_problem(ds.get("Modality"), ds.get("SOPClassUID"))
    if problem is not None:
        raise NotARadiographError(problem)
    missing = [name for name in REQUIRED_UIDS if not str(ds.get(name, "") or "").strip()]
    if missing:
        raise DicomInputError(
            422,
            "dicom_missing_attribute",
            f"the DICOM radiograph lacks {', '.join(missing)}, which a Segmentation/SR must reference",
            missing=missing,
        )
    invalid = [name for name in REQUIRED_UIDS if not UID(str(ds.get(name))).is_valid]
    if invalid:
        raise DicomInputError(
            422, "dicom_invalid_uid", f"the DICOM radiograph's {', '.join(invalid)} is not a valid UID", invalid=invalid
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DicomInputError(422, "multi_frame", f"the DICOM radiograph has {frames} frames; send one single-frame image")


# Type 2 attributes (present, possibly empty) of the Patient and General Study modules that a SEG/SR copies
# from its source. Files in the wild sometimes omit them; absent means unknown, which DICOM writes as empty.
COPIED_TYPE2 = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def fill_missing_type2(ds: Dataset) -> list[str]:
    """Add the absent COPIED_TYPE2 attributes, empty, to this parsed copy of the source; returns their names."""
    missing = [keyword for keyword in COPIED_TYPE2 if keyword not in ds]
    for keyword in missing:
        setattr(ds, keyword, "")
    return missing


@contextmanager
def copied_from_source(what: str) -> Iterator[None]:
    """highdicom validates what it copies from the source (dates, coded values): a bad value is the file's fault."""
    try:
        yield
    except (AttributeError, ValueError, TypeError) as exc:
        raise DicomInputError(
            422, "dicom_not_encodable", f"the source DICOM's attributes cannot be carried into a {what}: {exc}"
        ) from exc


def dataset_bytes(ds: Dataset) -> bytes:
    """A Dataset (e.g. fetched over WADO-RS) as DICOM Part 10 bytes in memory, for the service's own decoder."""
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
