"""The front door: one frozen `StudyRequest`, built at each edge, and `analyze_study(engine, request)`.

Every entry point (/segment, /classify, /dicom/seg, /dicom/sr, DICOMweb `analyze`, `spine-batch`,
`spine-evaluate`) builds a request and shapes the `StudyResult` it gets back; none decodes, chooses models
or reads a view on its own. A film's way: the request's structures are checked and its models chosen
(before decoding when every view is known) -> decode (side by side) -> refuse what is not a radiograph ->
the view from the sender, else the DICOM header, else the request's default -> `analysis.analyze`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from spine_core.spine_gate import NOT_RADIOGRAPH_MODALITIES
from spine_core.structures import STRUCTURES, VIEWS
from spine_engine.analysis import StudyResult, analyze, choose_study
from spine_engine.decoding import VIEW_NAMES, DecodedImage, decode_image, radiograph_problem
from spine_engine.engine import Engine
from spine_engine.errors import NotARadiographError, UnknownStructureError, UnknownViewError
from spine_engine.policy import MAX_IMAGE_PIXELS, AnalysisPolicy

NO_VIEW = "view is required (AP or LAT): the file does not name one (a DICOM ViewPosition AP, PA, LL or RL would)"


@dataclass(frozen=True)
class Film:
    """One image of a study: the bytes as sent (or pixels already decoded) and the view its sender named."""

    data: bytes = b""
    filename: str | None = None  # lets the decoder try a DICOM without its preamble (`.dcm`)
    view: str | None = None  # any spelling (ap, Lat, PA, LL...); None: the DICOM header says, else the default
    decoded: DecodedImage | None = None  # already decoded (spine-evaluate): `data` is not read


@dataclass(frozen=True)
class StudyRequest:
    films: tuple[Film, ...]
    policy: AnalysisPolicy
    structures: tuple[str, ...] | None = None  # names of any view sent (None: each view's default models)
    classify: bool = True  # score the masks and decide a label (False: masks and the measurement only)
    source_masks: bool = True  # False: only the vertebra mask (the measurement reads it) at the original size
    max_pixels: int = MAX_IMAGE_PIXELS
    default_view: str | None = None  # for a film whose sender and header name no view (spine-batch --view)


def canonical_view(view: str | None) -> str | None:
    """'ap', 'Lat', 'lateral' (or a DICOM ViewPosition term: PA, LL...) -> 'AP' / 'LAT'; None stays None (DICOM may say)."""
    if view is None or not view.strip():
        return None
    canonical = VIEW_NAMES.get(view.strip().upper())
    if canonical is None:
        raise UnknownViewError(f"unknown view {view!r}; expected one of {', '.join(VIEWS)}")
    return canonical


def parse_structures(text: str | None) -> tuple[str, ...] | None:
    """'Ap_Vertebra, ap_pedicle' -> canonical names (case-insensitive); None or blank = every structure of the view."""
    if text is None or not text.strip():
        return None
    by_lower = {name.lower(): name for name in STRUCTURES}
    names = [part.strip() for part in text.split(",") if part.strip()]
    return tuple(by_lower.get(name.lower(), name) for name in names)


def structures_by_view(structures: tuple[str, ...] | None, views: list[str]) -> dict[str, list[str] | None]:
    """The named structures of each view (None: that view's defaults); a name of no view sent is refused."""
    per_view: dict[str, list[str] | None] = {view: None for view in views}
    if structures is None:
        return per_view
    sent = ", ".join(views)
    if unknown := [s for s in structures if s not in STRUCTURES]:
        of_views = "; ".join(f"{v} structures: {', '.join(s for s, sv in STRUCTURES.items() if sv == v)}" for v in views)
        raise UnknownStructureError(f"unknown structure {', '.join(map(repr, unknown))}; {of_views}")
    if stray := [s for s in structures if STRUCTURES[s] not in views]:
        names = "; ".join(f"structure {s!r} belongs to view {STRUCTURES[s]}" for s in stray)
        raise UnknownStructureError(f"{names}, which was not sent ({sent}); send that view, or name {sent} structures")
    for view in views:
        per_view[view] = [s for s in structures if STRUCTURES.get(s) == view] or None
    return per_view


def refuse_non_radiograph(image: DecodedImage) -> None:
    """A CT, MR, NM... DICOM is not_a_radiograph on every route (the DICOM routes check their stricter list first)."""
    if image.modality is not None and image.modality in NOT_RADIOGRAPH_MODALITIES:
        raise NotARadiographError(radiograph_problem(image.modality, image.sop_class_uid) or "not a projection radiograph")


def analyze_study(engine: Engine, request: StudyRequest) -> StudyResult:
    """The study's films decoded, their views read, their models chosen once, then segmented, measured and decided."""
    registry = engine.registry
    policy = request.policy
    views = [canonical_view(film.view) for film in request.films]
    if len(set(views)) < len(views) and None not in views:
        raise UnknownViewError(f"one film per view: the study has {', '.join(v or '?' for v in views)}")
    selection = None
    if None not in views:  # checked once, before decoding a large file
        known = [v for v in views if v is not None]
        selection = choose_study(registry, known, structures_by_view(request.structures, known), policy, request.classify)
    started = time.perf_counter()
    images = registry.parallel_map(
        lambda film: film.decoded or decode_image(film.data, request.max_pixels, film.filename), list(request.films)
    )
    decode_ms = (time.perf_counter() - started) * 1000
    for image in images:
        refuse_non_radiograph(image)
    resolved: list[str] = []
    for view, image in zip(views, images, strict=True):
        found = view or image.view or canonical_view(request.default_view)
        if found is None:
            raise UnknownViewError(NO_VIEW)
        resolved.append(found)
    if selection is None:  # a view came from a DICOM header: checked now
        if len(set(resolved)) < len(resolved):
            raise UnknownViewError(f"one film per view: the study has {', '.join(resolved)}")
        selection = choose_study(registry, resolved, structures_by_view(request.structures, resolved), policy, request.classify)
    decoded = dict(zip(resolved, images, strict=True))
    warnings = [
        f"the {view} file's DICOM ViewPosition says {image.view}; analysed as {view} as sent"
        for view, image in decoded.items()
        if image.view is not None and image.view != view
    ]
    study = analyze(engine, decoded, policy, selection, request.classify, request.source_masks)
    study.timings_ms = {"decode": decode_ms, **study.timings_ms}
    study.warnings = warnings + study.warnings
    return study
