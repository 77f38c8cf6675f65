"""What /segment and /classify do, as plain blocking functions (the routes run them in a worker thread).

Upload bytes -> decode -> segment (-> classify) -> encode masks -> response model. No web framework here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace

import numpy as np

from service.masks import bbox_xywh, mask_to_png, mask_to_rle
from service.measurement_overlay import draw_cobb
from service.overlay import legend, overlay_png
from service.schemas import (
    ClassifyResponse,
    CobbOut,
    Excluded,
    LegendEntry,
    MaskOut,
    ModelRef,
    PerMaskScore,
    RleMask,
    RuleOut,
    SegmentResponse,
    VertebraOut,
    ViewMasks,
)
from spine_core.structures import STRUCTURES, VIEWS
from spine_engine import ModelRegistry, UnknownStructureError, UnknownViewError
from spine_engine.analysis import AnalysisPolicy, Exclusion, SpineReading, StudyAnalysis, analyze, choose_study, demonstration
from spine_engine.decoding import VIEW_NAMES, DecodedImage, decode_image


@dataclass
class Upload:
    data: bytes
    filename: str | None = None


def canonical_view(view: str | None) -> str | None:
    """'ap', 'Lat', 'lateral' (or a DICOM ViewPosition term: PA, LL...) -> 'AP' / 'LAT'; None stays None (DICOM may say)."""
    if view is None or not view.strip():
        return None
    canonical = VIEW_NAMES.get(view.strip().upper())
    if canonical is None:
        raise UnknownViewError(f"unknown view {view!r}; expected one of {', '.join(VIEWS)}")
    return canonical


def parse_structures(text: str | None) -> list[str] | None:
    """'Ap_Vertebra, ap_pedicle' -> canonical names (case-insensitive); None or blank = every structure of the view."""
    if text is None or not text.strip():
        return None
    by_lower = {name.lower(): name for name in STRUCTURES}
    names = [part.strip() for part in text.split(",") if part.strip()]
    return [by_lower.get(name.lower(), name) for name in names]


def _encode_mask(structure: str, mask: np.ndarray, mask_format: str) -> MaskOut:
    data: str | RleMask = mask_to_png(mask) if mask_format == "png" else RleMask(**mask_to_rle(mask))
    area = int(np.count_nonzero(mask))  # much faster than mask.sum() on a bool array
    return MaskOut(structure=structure, encoding=mask_format, data=data, area_px=area, bbox=bbox_xywh(mask))  # type: ignore[arg-type]


def _encode_masks(registry: ModelRegistry, masks: dict[str, np.ndarray], mask_format: str) -> list[MaskOut]:
    """Every mask encoded, side by side on the inference slots' threads."""
    return registry.parallel_map(lambda item: _encode_mask(item[0], item[1], mask_format), list(masks.items()))


def _model_refs(registry: ModelRegistry, names: Iterable[str]) -> list[ModelRef]:
    refs = []
    for name in dict.fromkeys(names):
        model = registry.models[name]
        entry = model.entry
        refs.append(
            ModelRef(
                name=entry.name, version=entry.version, sha256=model.sha256, validated=entry.validated, precision=model.precision
            )
        )
    return refs


def _warnings(registry: ModelRegistry, names: Iterable[str]) -> list[str]:
    warnings = []
    for name in dict.fromkeys(names):
        entry = registry.models[name].entry
        if not entry.validated:
            warnings.append(f"model {name} is not validated (demonstration weights): {entry.notes or 'see GET /models'}")
    requested = registry.requested_providers[0] if registry.requested_providers else None
    if requested and registry.execution_provider != requested:
        warnings.append(f"running on {registry.execution_provider}; {requested} was requested but is not usable here")
    return warnings


def _decode(upload: Upload, max_pixels: int) -> tuple[DecodedImage, float]:
    started = time.perf_counter()
    decoded = decode_image(upload.data, max_pixels, upload.filename)
    return decoded, (time.perf_counter() - started) * 1000


def _rounded(timings: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in timings.items()}


def _excluded(excluded: list[Exclusion]) -> list[Excluded]:
    return [Excluded(view=e.view, structure=e.structure, reason=e.reason) for e in excluded]  # type: ignore[arg-type]


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _measurement(reading: SpineReading) -> tuple[list[VertebraOut], CobbOut | None]:
    vertebrae = [VertebraOut(**v.to_dict()) for v in reading.vertebrae.vertebrae] if reading.vertebrae else []
    cobb = None
    if reading.cobb is not None:
        c = reading.cobb
        cobb = CobbOut(
            angles_deg=[round(a, 2) for a in c.angles_deg],
            max_deg=round(c.max_deg, 2),
            curve=c.curve,  # type: ignore[arg-type]
            curves=[
                {**vars(curve), "angle_deg": round(curve.angle_deg, 2), "end_confidence": _round(curve.end_confidence, 3)}
                for curve in c.curves
            ],  # type: ignore[misc]
            severity=c.severity,  # type: ignore[arg-type]
            reliable=c.reliable,
        )
    return vertebrae, cobb


def _reading_warnings(view: str, reading: SpineReading) -> list[str]:
    warnings = []
    if reading.gate is not None and not reading.gate.ok:
        warnings.append(f"{view}: {reading.gate.reason}; these masks are not a reading of a spine")
    if reading.windowed:
        warnings.append(f"{view}: the spine was found in a window of a large field of view and segmented there")
    if note := reading.measurement_note():
        warnings.append(f"{view}: {note}")
    return warnings


def _views_of(images: dict[str, DecodedImage]) -> list[str]:
    warnings = []
    for view, image in images.items():
        if image.view is not None and image.view != view:
            warnings.append(f"the {view} file's DICOM ViewPosition says {image.view}; analysed as {view} as sent")
    return warnings


def segment_upload(
    registry: ModelRegistry,
    upload: Upload,
    view: str | None,
    structures: list[str] | None,
    mask_format: str = "png",
    overlay: bool = False,
    max_pixels: int = 100_000_000,
    overlay_max_side: int | None = None,
    policy: AnalysisPolicy | None = None,
) -> SegmentResponse:
    started = time.perf_counter()
    policy = policy or AnalysisPolicy()
    view = canonical_view(view)
    # The request is checked once: before decoding a large file when the view is given, else after.
    selection = choose_study(registry, [view], {view: structures}, policy) if view is not None else None
    decoded, decode_ms = _decode(upload, max_pixels)
    if view is None:
        if decoded.view is None:
            raise UnknownViewError("view is required (AP or LAT) unless the file is a DICOM whose ViewPosition says it")
        view = decoded.view
        selection = choose_study(registry, [view], {view: structures}, policy)
    warnings = _views_of({view: decoded})
    study = analyze(registry, {view: decoded}, policy, selection, classify=False)
    analysed = study.views[view]
    result, reading = analysed.result, analysed.reading
    warnings += _reading_warnings(view, reading)
    vertebrae, cobb = _measurement(reading)

    encode_started = time.perf_counter()
    masks = _encode_masks(registry, result.masks, mask_format)
    demo = demonstration(registry, list(result.masks))
    overlay_b64 = None
    if overlay:
        annotate = None
        if reading.cobb is not None and reading.vertebrae is not None:
            cobb_result, found = reading.cobb, reading.vertebrae.vertebrae

            def annotate(image, scale):  # type: ignore[no-untyped-def]
                image.paste(draw_cobb(image, cobb_result, found, scale))

        overlay_b64 = overlay_png(decoded.pixels, result.masks, demo, max_side=overlay_max_side, annotate=annotate)
    timings = {"decode": decode_ms, **result.timings_ms, "encode": (time.perf_counter() - encode_started) * 1000}
    timings["total"] = (time.perf_counter() - started) * 1000
    return SegmentResponse(
        view=view,  # type: ignore[arg-type]
        width=decoded.width,
        height=decoded.height,
        format=decoded.format,
        masks=masks,
        overlay_png=overlay_b64,
        legend=[LegendEntry(**vars(e)) for e in legend(list(result.masks), demo)],
        excluded=_excluded(study.excluded),
        vertebrae=vertebrae,
        cobb=cobb,
        models=_model_refs(registry, result.models_used),
        execution_provider=registry.execution_provider,
        timings_ms=_rounded(timings),
        warnings=warnings + _warnings(registry, result.models_used),
    )


def analyze_uploads(
    registry: ModelRegistry,
    uploads: dict[str, Upload],
    policy: AnalysisPolicy | None = None,
    structures: list[str] | None = None,
    max_pixels: int = 100_000_000,
    include_masks: bool = True,
) -> tuple[StudyAnalysis, dict[str, DecodedImage]]:
    """Decode a study's files (side by side) and analyse them: what /classify answers, before encoding.

    `structures` (names of any view) replaces each view's default models with the named ones of that view.
    `include_masks=False` (a label-only client) leaves the masks it does not need at the model's size.
    """
    policy = policy or AnalysisPolicy()
    per_view: dict[str, list[str] | None] = {view: None for view in uploads}
    if structures is not None:
        stray = [s for s in structures if STRUCTURES.get(s) not in uploads]
        if stray:
            raise UnknownStructureError(
                f"structures {', '.join(map(repr, stray))} belong to no view sent ({', '.join(uploads)}); "
                f"known: {', '.join(STRUCTURES)}"
            )
        for view in uploads:
            named = [s for s in structures if STRUCTURES.get(s) == view]
            per_view[view] = named or None
    selection = choose_study(registry, uploads, per_view, policy)  # checked once, before decoding
    started = time.perf_counter()
    images = registry.parallel_map(lambda upload: decode_image(upload.data, max_pixels, upload.filename), list(uploads.values()))
    decoded: dict[str, DecodedImage] = dict(zip(uploads, images, strict=True))
    decode_ms = (time.perf_counter() - started) * 1000
    study = analyze(registry, decoded, policy, selection, source_masks=include_masks)
    study.timings_ms = {"decode": decode_ms, **study.timings_ms}
    return study, decoded


def classify_uploads(
    registry: ModelRegistry,
    uploads: dict[str, Upload],
    include_masks: bool = True,
    mask_format: str = "png",
    aggregation: str | None = None,
    max_pixels: int = 100_000_000,
    policy: AnalysisPolicy | None = None,
    structures: list[str] | None = None,
) -> ClassifyResponse:
    """`uploads` maps view (AP/LAT) to its file; `aggregation` overrides the policy's rule for this request."""
    started = time.perf_counter()
    policy = policy or AnalysisPolicy()
    if aggregation is not None:
        policy = replace(policy, aggregation=aggregation)
    study, decoded = analyze_uploads(registry, uploads, policy, structures, max_pixels, include_masks)
    return classify_response(registry, study, decoded, include_masks, mask_format, started)


def classify_response(
    registry: ModelRegistry,
    study: StudyAnalysis,
    decoded: dict[str, DecodedImage],
    include_masks: bool = True,
    mask_format: str = "png",
    started: float | None = None,
) -> ClassifyResponse:
    """The /classify body of an analysed study."""
    started = time.perf_counter() if started is None else started
    decision = study.decision
    assert decision is not None, "analyze(classify=True) decides"
    timings = dict(study.timings_ms)
    encode_started = time.perf_counter()
    views = [
        ViewMasks(
            view=view,  # type: ignore[arg-type]
            width=v.image.width,
            height=v.image.height,
            format=v.image.format,
            masks=_encode_masks(registry, v.result.masks, mask_format) if include_masks else [],
        )
        for view, v in study.views.items()
    ]
    timings["encode"] = (time.perf_counter() - encode_started) * 1000
    timings["total"] = (time.perf_counter() - started) * 1000
    structure_view = {s: v.result.view for v in study.views.values() for s in v.result.model_frame_masks}
    demo = demonstration(registry, list(study.per_mask))
    warnings = _views_of(decoded)
    for view, v in study.views.items():
        warnings += _reading_warnings(view, v.reading)
    ap = study.views.get("AP")
    vertebrae, cobb = _measurement(ap.reading) if ap else ([], None)
    return ClassifyResponse(
        label=decision.label,  # type: ignore[arg-type]
        score=round(decision.score, 6),
        p_damaged=round(decision.p_damaged, 6),
        threshold=round(decision.threshold, 6),
        aggregation=decision.rule,  # type: ignore[arg-type]
        decided_by=decision.decided_by,
        rules={
            name: RuleOut(**{k: (round(v, 6) if isinstance(v, float) else v) for k, v in vars(o).items()})
            for name, o in decision.rules.items()
        },
        excluded=_excluded(study.excluded),
        per_mask=[
            PerMaskScore(
                structure=s,
                view=structure_view[s],  # type: ignore[arg-type]
                p_normal=round(1.0 - p, 6),
                p_damaged=round(p, 6),
                p_damaged_raw=round(study.per_mask_raw[s][1], 6),
                validated=s not in demo,
                decides=s in decision.decided_by,
            )
            for s, p in study.per_mask.items()
        ],
        vertebrae=vertebrae,
        cobb=cobb,
        views=views,
        models=_model_refs(registry, study.models_used),
        execution_provider=registry.execution_provider,
        timings_ms=_rounded(timings),
        warnings=warnings + _warnings(registry, study.models_used),
    )
