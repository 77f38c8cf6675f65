"""The one root of every refusal: an HTTP status, a stable code, a message for the caller, and details.

Every error a caller can act on derives from `SpineError`, wherever it is raised (decoding, the models, the
DICOM checks, the KServe codec, the routes): the service answers all of them with one handler, `spine-batch`
writes the same code into a row, DICOMweb `analyze` lists the same message for a skipped object.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class SpineError(Exception):
    """`status_code`, `code` and `message` (the class's defaults unless given), and `details` (extra body fields)."""

    status_code = 422
    code = "invalid_request"

    def __init__(self, message: str = "", *, status_code: int | None = None, code: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if status_code is not None:
            self.status_code = status_code
        if code is not None:
            self.code = code
        self.details: dict[str, Any] = details

    def __str__(self) -> str:  # KeyError subclasses would quote the message otherwise
        return self.message

    def describe(self) -> tuple[int, str, str]:
        """(HTTP status, code, message): what the API answers, what a batch row records."""
        return self.status_code, self.code, self.message


# The inference layer's errors keep their historical base name.
InferenceError = SpineError


class UnknownViewError(SpineError, ValueError):
    code = "unknown_view"


class UnknownStructureError(SpineError, ValueError):
    code = "unknown_structure"


class UnknownModelError(SpineError, KeyError):
    status_code, code = 404, "unknown_model"


class InvalidInputError(SpineError, ValueError):
    status_code, code = 400, "invalid_input"


class ModelUnavailableError(SpineError):
    """A model the request needs is listed but not servable (missing, corrupt, sha mismatch, no GPU...)."""

    status_code, code = 503, "model_unavailable"

    def __init__(self, problems: Mapping[str, str]):
        self.problems = dict(problems)
        super().__init__("; ".join(f"{name}: {why}" for name, why in self.problems.items()), problems=self.problems)


class NoValidatedModelError(SpineError, ValueError):
    """The request would be answered by demonstration models only (e.g. a LAT-only study)."""

    code = "no_validated_model"


class NoSpineFoundError(SpineError, ValueError):
    """The input is not a readable AP spine radiograph: no label rather than a confident wrong one."""

    code = "no_spine_found"

    def __init__(self, reason: str, features: Mapping[str, float] | None = None, failed: list[str] | None = None):
        self.features = dict(features or {})
        self.failed = list(failed or [])  # the signals that refused it
        # What the spine check measured, rounded for the answer.
        super().__init__(reason, features={k: round(v, 4) for k, v in self.features.items()})


class NoMeasurementError(SpineError, ValueError):
    """A rule that needs the Cobb angle was asked for, and the film's vertebrae could not all be found."""

    code = "no_measurement"


class NotARadiographError(SpineError, ValueError):
    """A DICOM object that is not a projection radiograph (CT, MR, NM...): the same answer on every route."""

    code = "not_a_radiograph"


class DicomInputError(SpineError):
    """A DICOM request refused, or a DICOMweb server that failed: `status_code`, `code`, `message` (+ details)."""

    def __init__(self, status_code: int, code: str, message: str, **details: Any) -> None:
        super().__init__(message, status_code=status_code, code=code, **details)

    @property
    def extra(self) -> dict[str, Any]:
        return self.details


# Every code an answer (or a spine-batch row, or a DICOMweb `skipped` entry) can carry: one table, shown in the
# README and in the OpenAPI document (tests/service/test_error_codes.py checks both, and that the code raises no other).
ERROR_CODES: dict[str, tuple[int | None, str]] = {
    "bad_request": (400, "malformed request: a broken multipart body, too many form fields or files, a field too long"),
    "invalid_input": (400, "KServe v2: an input the model does not take (name, datatype, shape)"),
    "invalid_v2_request": (400, "KServe v2: the request does not follow the protocol"),
    "unauthorized": (401, "no valid API key (SPINE_API_KEYS is set)"),
    "forbidden": (403, "an API key without the scope the route needs (`annotate`, `admin`: SPINE_SCOPED_API_KEYS)"),
    "not_found": (404, "no such path"),
    "unknown_model": (404, "no model of that name"),
    "unknown_version": (404, "the model has no such version"),
    "study_not_found": (404, "the DICOMweb server has no such study"),
    "dicomweb_not_configured": (404, "DICOMweb analyze without SPINE_DICOMWEB_URL"),
    "annotations_not_configured": (404, "/annotations without SPINE_ANNOTATIONS_DIR"),
    "annotation_not_found": (404, "no annotated study of that id"),
    "method_not_allowed": (405, "wrong HTTP method for the path"),
    "body_timeout": (408, "the request body did not arrive within SPINE_BODY_TIMEOUT_S"),
    "length_required": (411, "a request body without a length"),
    "body_too_large": (413, "request body over SPINE_MAX_UPLOAD_BYTES (or a v2 body over it once decompressed)"),
    "image_too_large": (413, "image over SPINE_MAX_IMAGE_PIXELS, read from its header before decoding"),
    "unsupported_media_type": (415, "not an image this service reads, or a DICOM transfer syntax without a decoder"),
    "not_dicom": (415, "a DICOM route sent a file that is not DICOM Part 10"),
    "validation_error": (422, "a missing or invalid form field (e.g. neither `ap` nor `lat` sent)"),
    "empty_file": (422, "the uploaded file is empty"),
    "invalid_image": (422, "the image cannot be used"),
    "corrupt_image": (422, "the image's (or DICOM file's) header or data cannot be decoded (truncated, corrupt, NaN pixels)"),
    "unknown_view": (422, "a view that is not AP or LAT, or no view where the file names none"),
    "unknown_structure": (422, "a structure that is unknown, or belongs to a view not sent"),
    "no_validated_model": (422, "only demonstration models could answer (e.g. a LAT-only study): no label"),
    "not_a_radiograph": (422, "a DICOM that is not a projection radiograph (CT, MR, NM...), on every route"),
    "no_spine_found": (422, "not a readable AP spine film (blank, noise, a photograph, a spine too small): no label"),
    "no_measurement": (422, "`aggregation=cobb` on a film without a reliable measured main curve"),
    "no_pixel_data": (422, "a DICOM object without pixel data, on every route"),
    "annotation_conflict": (409, "POST /annotations: the study id is already saved under the other class"),
    "dicom_missing_attribute": (422, "a DICOM radiograph without the UIDs a SEG/SR must reference"),
    "dicom_invalid_uid": (422, "a DICOM radiograph whose UIDs are not valid"),
    "multi_frame": (422, "a multi-frame DICOM radiograph"),
    "dicom_not_encodable": (422, "the source DICOM's attributes cannot be carried into a SEG/SR"),
    "no_radiographs": (422, "DICOMweb analyze: no AP or LAT radiograph in the study (`skipped` says why)"),
    "invalid_request": (422, "a request the analysis refuses (the root's default)"),
    "internal_error": (500, "a bug (logged with the request id); never the answer to anything a client sends"),
    "pacs_unreachable": (502, "the DICOMweb server cannot be reached"),
    "pacs_error": (502, "the DICOMweb server answered with an error"),
    "pacs_bad_answer": (502, "the DICOMweb server's answer cannot be read"),
    "pacs_store_failed": (502, "the DICOMweb server refused the SEG/SR"),
    "not_ready": (503, "the models cannot answer (a missing, corrupt or mismatched file)"),
    "loading": (503, "the models are still loading"),
    "model_unavailable": (503, "a model the request needs is not servable (`problems` names it)"),
    "reload_failed": (503, "POST /models/reload: the models folder cannot be loaded; the previous models still serve"),
    "overloaded": (503, "too many requests waiting (SPINE_MAX_QUEUE); retry after `Retry-After`"),
    "pacs_timeout": (504, "the DICOMweb server did not answer within SPINE_DICOMWEB_TIMEOUT_S"),
    "read_error": (None, "spine-batch only: the file cannot be read"),
}


def error_code_table() -> str:
    """ERROR_CODES as a Markdown table (the README's and the OpenAPI document's)."""
    rows = [f"| {status or '—'} | `{code}` | {meaning} |" for code, (status, meaning) in ERROR_CODES.items()]
    return "\n".join(["| status | code | meaning |", "| --- | --- | --- |", *rows])


def describe_error(exc: BaseException) -> tuple[int, str, str] | None:
    """(HTTP status, code, message) the API answers for `exc`; None for anything that is not a SpineError."""
    return exc.describe() if isinstance(exc, SpineError) else None
