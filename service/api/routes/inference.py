"""POST /segment and POST /classify: build the study request from the form, run it in a worker thread, count."""

from __future__ import annotations

from dataclasses import replace
from functools import partial
from typing import Annotated

import anyio
from fastapi import APIRouter, File, Form, UploadFile

from service.api.deps import EngineDep, LimiterDep, MetricsDep, SettingsDep
from service.core.errors import ApiError
from service.schemas import AggregationName, ClassifyResponse, MaskFormat, SegmentResponse, error_responses
from spine_engine import answers
from spine_engine.decoding import SUPPORTED
from spine_engine.study import Film, StudyRequest, parse_structures

router = APIRouter(tags=["inference"])

ERRORS = error_responses(400, 413, 415, 422, 503)
VIEW_HELP = (
    "AP or LAT (case-insensitive; LATERAL and the DICOM ViewPosition terms PA, LL, RL too); "
    "optional for a DICOM whose ViewPosition says it"
)
STRUCTURES_HELP = (
    "Comma-separated structures to run (case-insensitive), demonstration ones included; default: the view's validated ones"
)
# Bounded text fields: a long value is a 422 before any work (and is never echoed back at length).
VIEW_MAX = 32
STRUCTURES_MAX = 512


async def _read(upload: UploadFile, view: str | None) -> Film:
    # The body limit middleware has already bounded what Starlette spooled; this reads the spooled file.
    return Film(data=await upload.read(), filename=upload.filename, view=view)


@router.post(
    "/segment",
    operation_id="segment",
    response_model=SegmentResponse,
    summary="Segment one radiograph with the validated U-Nets of its view (or the ones named)",
    description=(
        "Masks come back at the original image size, as base64 1-bit PNG or COCO uncompressed RLE. By default only "
        "validated models run; demonstration models run when named in `structures`. AP films also get the vertebrae "
        "T1-L5 and the Cobb angles when all 17 vertebrae are found."
    ),
    responses=ERRORS,
)
async def segment(
    engine: EngineDep,
    settings: SettingsDep,
    limiter: LimiterDep,
    metrics: MetricsDep,
    file: Annotated[UploadFile, File(description=f"The radiograph: {SUPPORTED}")],
    view: Annotated[str | None, Form(description=VIEW_HELP, examples=["AP"], max_length=VIEW_MAX)] = None,
    structures: Annotated[
        str | None, Form(description=STRUCTURES_HELP, examples=["Ap_Vertebra,Ap_Pedicle"], max_length=STRUCTURES_MAX)
    ] = None,
    mask_format: Annotated[MaskFormat, Form(description="png (base64 1-bit PNG) or rle (COCO uncompressed RLE)")] = "png",
    overlay: Annotated[bool, Form(description="Also return the radiograph with coloured masks as base64 PNG")] = False,
) -> SegmentResponse:
    request = StudyRequest(
        films=(await _read(file, view),),
        policy=engine.policy,
        structures=parse_structures(structures),
        classify=False,
        max_pixels=engine.max_pixels,
    )
    job = partial(answers.segment, engine, request, mask_format, overlay, settings.overlay_max_side)
    result = await anyio.to_thread.run_sync(job, limiter=limiter)
    metrics.images.labels("segment", result.view).inc()
    return result


@router.post(
    "/classify",
    operation_id="classify",
    response_model=ClassifyResponse,
    summary="Segment the AP and/or LAT radiograph, measure the AP spine and label the study Normal/Damaged",
    description=(
        "Each view is segmented with its validated U-Nets (or the ones named in `structures`); every mask is scored by "
        "the classifier, calibrated; only validated models' scores decide the label (`decided_by`). What is not a "
        "readable AP spine gets 422 `no_spine_found`; a study with no validated model (e.g. LAT only) gets 422 "
        "`no_validated_model`."
    ),
    responses=ERRORS,
)
async def classify(
    engine: EngineDep,
    limiter: LimiterDep,
    metrics: MetricsDep,
    ap: Annotated[UploadFile | None, File(description=f"AP radiograph: {SUPPORTED}")] = None,
    lat: Annotated[UploadFile | None, File(description=f"Lateral radiograph: {SUPPORTED}")] = None,
    include_masks: Annotated[bool, Form(description="Return the masks as /segment does")] = True,
    mask_format: Annotated[MaskFormat, Form()] = "png",
    aggregation: Annotated[AggregationName | None, Form(description="Override SPINE_AGGREGATION for this request")] = None,
    structures: Annotated[
        str | None,
        Form(description=STRUCTURES_HELP + " (of any view sent)", examples=["Ap_Vertebra"], max_length=STRUCTURES_MAX),
    ] = None,
) -> ClassifyResponse:
    films = tuple([await _read(f, view) for view, f in (("AP", ap), ("LAT", lat)) if f is not None])
    if not films:
        raise ApiError(422, "validation_error", "send at least one of the files `ap` and `lat`")
    request = StudyRequest(
        films=films,
        policy=replace(engine.policy, aggregation=aggregation) if aggregation else engine.policy,
        structures=parse_structures(structures),
        source_masks=include_masks,
        max_pixels=engine.max_pixels,
    )
    job = partial(answers.classify, engine, request, include_masks, mask_format)
    result = await anyio.to_thread.run_sync(job, limiter=limiter)
    for film in films:
        metrics.images.labels("classify", film.view).inc()
    return result
