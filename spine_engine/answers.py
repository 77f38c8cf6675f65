"""A `StudyResult` shaped into the answers: the /segment and /classify bodies (spine-batch flattens the latter).

The shaping is here, below the adapters, so a batch row and a DICOM object read the same fields as the
HTTP answer. No web framework here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import numpy as np

from spine_engine.analysis import Exclusion, SpineReading, StudyResult, demonstration
from spine_engine.engine import Engine
from spine_engine.masks import bbox_xywh, mask_to_png, mask_to_rle
from spine_engine.measurement_overlay import draw_cobb
from spine_engine.overlay import legend, overlay_png
from spine_engine.registry import ModelRegistry
from spine_engine.schemas import (
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
from spine_engine.study import StudyRequest, analyze_study


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


def model_warnings(registry: ModelRegistry, names: Iterable[str]) -> list[str]:
    """A demonstration model's warning, once per model used. The provider is not a warning: the answer says it
    (`execution_provider`), and a CPU machine's choice is logged once at start-up."""
    warnings = []
    for name in dict.fromkeys(names):
        entry = registry.models[name].entry
        if not entry.validated:
            warnings.append(f"model {name} is not validated (demonstration weights): {entry.notes or 'see GET /models'}")
    return warnings


def _rounded(timings: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 2) for k, v in timings.items()}


def _excluded(excluded: list[Exclusion]) -> list[Excluded]:
    return [Excluded(view=e.view, structure=e.structure, reason=e.reason) for e in excluded]  # type: ignore[arg-type]


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def measurement_out(reading: SpineReading) -> tuple[list[VertebraOut], CobbOut | None]:
    vertebrae = [VertebraOut(**v.to_dict()) for v in reading.vertebrae.vertebrae] if reading.vertebrae else []
    cobb = None
    if reading.cobb is not None:
        c = reading.cobb
        cobb = CobbOut(
            angles_deg=[round(a, 2) for a in c.angles_deg],
            aasce_angles_deg=[round(a, 2) for a in c.aasce_angles_deg],
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


def reading_warnings(view: str, reading: SpineReading) -> list[str]:
    warnings = []
    if reading.gate is not None and not reading.gate.ok:
        warnings.append(f"{view}: {reading.gate.reason}; these masks are not a reading of a spine")
    if reading.windowed:
        warnings.append(f"{view}: the spine was found in a window of a large field of view and segmented there")
    if note := reading.measurement_note():
        warnings.append(f"{view}: {note}")
    return warnings


def segment_response(
    engine: Engine,
    study: StudyResult,
    mask_format: str = "png",
    overlay: bool = False,
    overlay_max_side: int | None = None,
    started: float | None = None,
) -> SegmentResponse:
    """The /segment body of a one-film study analysed with classify=False."""
    started = time.perf_counter() if started is None else started
    registry = engine.registry
    view, analysed = next(iter(study.views.items()))
    decoded, result, reading = analysed.image, analysed.result, analysed.reading
    warnings = study.warnings + reading_warnings(view, reading)
    vertebrae, cobb = measurement_out(reading)
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
    timings = {**study.timings_ms, "encode": (time.perf_counter() - encode_started) * 1000}
    timings.pop("measurement", None)  # /segment has always reported the steps of the masks (decode..encode, total)
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
        warnings=warnings + model_warnings(registry, result.models_used),
    )


def classify_response(
    engine: Engine, study: StudyResult, include_masks: bool = True, mask_format: str = "png", started: float | None = None
) -> ClassifyResponse:
    """The /classify body of an analysed study (classify=True)."""
    started = time.perf_counter() if started is None else started
    registry, rules = engine.registry, engine.rules
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
    warnings = list(study.warnings)
    for view, v in study.views.items():
        warnings += reading_warnings(view, v.reading)
    ap = study.views.get("AP")
    vertebrae, cobb = measurement_out(ap.reading) if ap else ([], None)
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
                validated=s not in rules.demonstration,
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
        warnings=warnings + model_warnings(registry, study.models_used),
    )


def segment(
    engine: Engine, request: StudyRequest, mask_format: str = "png", overlay: bool = False, overlay_max_side: int | None = None
) -> SegmentResponse:
    """/segment: one film's masks and measurement, no label."""
    started = time.perf_counter()
    return segment_response(engine, analyze_study(engine, request), mask_format, overlay, overlay_max_side, started)


def classify(engine: Engine, request: StudyRequest, include_masks: bool = True, mask_format: str = "png") -> ClassifyResponse:
    """/classify (and a spine-batch row): the study's label, scores, measurement and (include_masks) masks."""
    started = time.perf_counter()
    return classify_response(engine, analyze_study(engine, request), include_masks, mask_format, started)
