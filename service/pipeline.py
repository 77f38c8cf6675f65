"""What /segment and /classify do, as plain blocking functions (the routes run them in a worker thread).

Upload bytes -> decode -> segment (-> classify) -> encode masks -> response model. No web framework here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from service.decoding import VIEW_NAMES, DecodedImage, decode_image
from service.inference import ModelRegistry, SegmentationResult, UnknownViewError, aggregate
from service.masks import bbox_xywh, mask_to_png, mask_to_rle
from service.overlay import overlay_png
from service.schemas import (
    ClassifyResponse,
    MaskOut,
    ModelRef,
    PerMaskScore,
    RleMask,
    SegmentResponse,
    ViewMasks,
)
from spine_core.structures import STRUCTURES, VIEWS


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


def segment_upload(
    registry: ModelRegistry,
    upload: Upload,
    view: str | None,
    structures: list[str] | None,
    mask_format: str = "png",
    overlay: bool = False,
    max_pixels: int = 100_000_000,
    overlay_max_side: int | None = None,
) -> SegmentResponse:
    started = time.perf_counter()
    view = canonical_view(view)
    # The request is checked once: before decoding a large file when the view is given, else after.
    models = registry.select_models(view, structures) if view is not None else None
    decoded, decode_ms = _decode(upload, max_pixels)
    warnings: list[str] = []
    if view is None:
        if decoded.view is None:
            raise UnknownViewError("view is required (AP or LAT) unless the file is a DICOM whose ViewPosition says it")
        view = decoded.view
    elif decoded.view is not None and decoded.view != view:
        warnings.append(f"the DICOM ViewPosition says {decoded.view}; segmented as {view} as requested")
    if models is None:
        models = registry.select_models(view, structures)
    result = registry.segment_selected([(decoded.pixels, view, models)])[0]

    encode_started = time.perf_counter()
    masks = _encode_masks(registry, result.masks, mask_format)
    overlay_b64 = overlay_png(decoded.pixels, result.masks, max_side=overlay_max_side) if overlay else None
    timings = {"decode": decode_ms, **result.timings_ms, "encode": (time.perf_counter() - encode_started) * 1000}
    timings["total"] = (time.perf_counter() - started) * 1000
    return SegmentResponse(
        view=view,  # type: ignore[arg-type]
        width=decoded.width,
        height=decoded.height,
        format=decoded.format,
        masks=masks,
        overlay_png=overlay_b64,
        models=_model_refs(registry, result.models_used),
        execution_provider=registry.execution_provider,
        timings_ms=_rounded(timings),
        warnings=warnings + _warnings(registry, result.models_used),
    )


def classify_uploads(
    registry: ModelRegistry,
    uploads: dict[str, Upload],
    include_masks: bool = True,
    mask_format: str = "png",
    aggregation: str = "max_score",
    max_pixels: int = 100_000_000,
) -> ClassifyResponse:
    """`uploads` maps view (AP/LAT) to its file; every mask of every view is scored in one classifier call."""
    started = time.perf_counter()
    classifier = registry.classifier()
    # Checked once, before decoding: fails fast when a view's models are missing or broken.
    models = {view: registry.select_models(view) for view in uploads}
    if classifier is not None:
        registry.get(classifier.name)
    warnings: list[str] = []
    decode_started = time.perf_counter()
    # The views decode side by side (wall time reported).
    images = registry.parallel_map(lambda upload: decode_image(upload.data, max_pixels, upload.filename), list(uploads.values()))
    decoded: dict[str, DecodedImage] = dict(zip(uploads, images, strict=True))
    timings: dict[str, float] = {"decode": (time.perf_counter() - decode_started) * 1000}
    for view, image in decoded.items():
        if image.view is not None and image.view != view:
            warnings.append(f"the {view} file's DICOM ViewPosition says {image.view}")

    # Every view's U-Nets queued at once, so the inference slots share the whole study.
    work = [(image.pixels, view, models[view]) for view, image in decoded.items()]
    segmented = registry.segment_selected(work, source_masks=include_masks)
    results: dict[str, SegmentationResult] = dict(zip(decoded, segmented, strict=True))
    timings.update(segmented[0].timings_ms)  # steps shared by the views: wall times
    frame_masks = {s: m for r in results.values() for s, m in r.model_frame_masks.items()}
    classify_started = time.perf_counter()
    per_mask = registry.classify_masks(frame_masks)
    timings["classification"] = (time.perf_counter() - classify_started) * 1000
    label, score = aggregate(per_mask, aggregation)

    encode_started = time.perf_counter()
    views = [
        ViewMasks(
            view=view,  # type: ignore[arg-type]
            width=decoded[view].width,
            height=decoded[view].height,
            format=decoded[view].format,
            masks=_encode_masks(registry, result.masks, mask_format) if include_masks else [],
        )
        for view, result in results.items()
    ]
    timings["encode"] = (time.perf_counter() - encode_started) * 1000
    timings["total"] = (time.perf_counter() - started) * 1000
    structure_view = {s: r.view for r in results.values() for s in r.model_frame_masks}
    used = [name for r in results.values() for name in r.models_used] + ([classifier.name] if classifier else [])
    return ClassifyResponse(
        label=label,  # type: ignore[arg-type]
        score=round(score, 6),
        aggregation=aggregation,  # type: ignore[arg-type]
        per_mask=[
            PerMaskScore(structure=s, view=structure_view[s], p_normal=round(p[0], 6), p_damaged=round(p[1], 6))  # type: ignore[arg-type]
            for s, p in per_mask.items()
        ],
        views=views,
        models=_model_refs(registry, used),
        execution_provider=registry.execution_provider,
        timings_ms=_rounded(timings),
        warnings=warnings + _warnings(registry, used),
    )
