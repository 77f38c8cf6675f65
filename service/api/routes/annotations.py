"""POST /annotations (an annotated view into the course-layout folder), GET /annotations, GET /annotations/{id}."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, File, Form, Path, UploadFile

from service.annotations import (
    STUDY_ID_PATTERN,
    AnnotationError,
    AnnotationUpload,
    Publish,
    list_studies,
    parse_provenance,
    read_study,
    save_annotation,
)
from service.api.deps import LimiterDep, SettingsDep, require_scope
from service.core.config import Settings
from service.core.errors import ApiError
from service.dicom.annotation_seg import store_annotation_seg
from service.dicom.dicomweb import DicomwebServer
from service.dicom.source import DicomInputError
from service.schemas import ErrorBody
from spine_core.structures import STRUCTURES

router = APIRouter(tags=["annotations"])

_ERRORS = {
    400: "Malformed request (a broken multipart body, too many fields or files)",
    502: "SPINE_DICOMWEB_URL is set and the DICOMweb server cannot be reached or refused the SEG (nothing was kept)",
    504: "SPINE_DICOMWEB_URL is set and the DICOMweb server did not answer in time (nothing was kept)",
    403: "API keys are on and this key lacks the `annotate` scope (SPINE_SCOPED_API_KEYS)",
    404: "No such study, or no annotation folder configured (SPINE_ANNOTATIONS_DIR unset)",
    409: "The study id is already saved under the other class",
    413: "Upload over the byte limit, or image over the pixel limit",
    415: "The film is not an image the service reads, or a mask is not a PNG",
    422: "Missing or invalid field, a mask not of the film's size or not a structure of the view, a corrupt image",
}
# One film and at most one mask per structure of a view (5 on LAT); the app-wide default allows 4 files.
MAX_FILES = 1 + max(list(STRUCTURES.values()).count(v) for v in ("AP", "LAT"))
PROVENANCE_HELP = (
    'JSON {structure: {"pre_annotation": {"source": "model"|"empty", "model", "model_version", "model_sha256", '
    '"validated"}, "edited_pixels", "edited_share"}}: recorded in the sidecar'
)


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {status: {"model": ErrorBody, "description": _ERRORS[status]} for status in statuses}


def _root(settings: Settings):
    if settings.annotations_dir is None:
        raise ApiError(
            404,
            "annotations_not_configured",
            "no annotation folder is configured: set SPINE_ANNOTATIONS_DIR (docs/annotation.md)",
        )
    return settings.annotations_dir


def _api_error(exc: AnnotationError | DicomInputError) -> ApiError:
    return ApiError(exc.status_code, exc.code, exc.message)


def _publisher(settings: Settings) -> Publish | None:
    """With SPINE_DICOMWEB_URL: the masks as a MANUAL DICOM SEG of a DICOM film, stored before the view is kept."""
    if not settings.dicomweb_url:
        return None
    password = settings.dicomweb_password.get_secret_value() if settings.dicomweb_password else None
    server = DicomwebServer(settings.dicomweb_url, settings.dicomweb_username, password, settings.dicomweb_timeout_s)
    return lambda upload, film_format, masks: store_annotation_seg(
        server, upload.film, film_format, masks, upload.view, upload.annotator, upload.provenance
    )


@router.post(
    "/annotations",
    operation_id="save_annotation",
    status_code=201,
    summary="Save an annotated film (one view of a study) in the course-dataset layout, with a JSON sidecar",
    description=(
        "Writes `<SPINE_ANNOTATIONS_DIR>/<study_class>/<study_id>/<view>/` with `<view>.jpg`, one 1-bit `<Structure>.png` "
        "per mask (each at the film's size; white, or gray >= 128, is the structure) and `annotation.json`, all at once "
        "or nothing. Saving a view again replaces it. With API keys on, the key needs the `annotate` scope. With "
        "SPINE_DICOMWEB_URL set, a DICOM film's masks are also stored there as a DICOM SEG (segment algorithm MANUAL) "
        "referencing the film, before the view is kept; the sidecar's `dicom` says where (or why not)."
    ),
    responses=_errors(400, 403, 404, 409, 413, 415, 422, 502, 504),
    dependencies=[require_scope("annotate")],
    form_limits={"max_files": MAX_FILES},
)
async def post_annotation(
    settings: SettingsDep,
    limiter: LimiterDep,
    film: Annotated[UploadFile, File(description="The radiograph: PNG, JPEG, TIFF or DICOM (a JPEG is stored unchanged)")],
    masks: Annotated[list[UploadFile], File(description="One PNG per structure, named <Structure>.png (e.g. Ap_Vertebra.png)")],
    view: Annotated[Literal["AP", "LAT"], Form(description="The film's view")],
    study_class: Annotated[Literal["Normal", "Damaged"], Form(description="The study's class, set by the annotator")],
    annotator: Annotated[str, Form(description="Who drew the masks (a name or an id)", min_length=1, max_length=128)],
    study_id: Annotated[
        str | None, Form(description="Add this view to (or replace it in) this study; default: a new id", max_length=64)
    ] = None,
    patient_id: Annotated[
        str | None, Form(description="Studies of one patient stay on one side of the training split", max_length=64)
    ] = None,
    provenance: Annotated[str | None, Form(description=PROVENANCE_HELP, max_length=16384)] = None,
) -> dict[str, Any]:
    root = _root(settings)
    by_structure: dict[str, bytes] = {}
    for upload in masks:
        name = (upload.filename or "").rsplit("/", 1)[-1]
        structure = name[:-4] if name.lower().endswith(".png") else name
        if structure in by_structure:
            raise ApiError(422, "validation_error", f"masks: {structure} given twice")
        by_structure[structure] = await upload.read()
    try:
        job = AnnotationUpload(
            view=view,
            study_class=study_class,
            film=await film.read(),
            film_filename=film.filename,
            masks=by_structure,
            annotator=annotator,
            study_id=study_id or None,
            patient_id=patient_id or None,
            provenance=parse_provenance(provenance),
        )
        save = partial(save_annotation, root, job, settings.max_image_pixels, _publisher(settings))
        return await anyio.to_thread.run_sync(save, limiter=limiter)
    except (AnnotationError, DicomInputError) as exc:
        raise _api_error(exc) from exc


@router.get(
    "/annotations",
    operation_id="list_annotations",
    summary="Every study in the annotation folder: class, views, structures, who and when",
    responses=_errors(404),
)
async def get_annotations(settings: SettingsDep) -> dict[str, Any]:
    root = _root(settings)
    studies = await anyio.to_thread.run_sync(list_studies, root)
    return {"root": str(root), "studies": studies}


@router.get(
    "/annotations/{study_id}",
    operation_id="get_annotation",
    summary="One study: its class and each view's sidecar (who, when, pre-annotating model, edited share, pixels)",
    responses=_errors(404, 422),
)
async def get_annotation(
    settings: SettingsDep, study_id: Annotated[str, Path(description="The study id", pattern=STUDY_ID_PATTERN, max_length=64)]
) -> dict[str, Any]:
    root = _root(settings)
    study = await anyio.to_thread.run_sync(read_study, root, study_id)
    if study is None:
        raise ApiError(404, "annotation_not_found", f"no study {study_id} in the annotation folder")
    return study
