"""Segmentation and mask scoring on the registry's models: choose the U-Nets, segment, refine, classify.

`select_models` checks a request (view, structures) once and returns the models; the other functions
take those models, so nothing downstream checks the request again.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from spine_core.preprocessing import (
    CropBox,
    Letterbox,
    crop_probabilities_to_letterbox,
    crop_probabilities_to_source,
    letterbox_probabilities_to_crop,
    mask_to_classifier_input,
    preprocess_crop,
    preprocess_image,
    source_mask,
    to_unet_batch,
)
from spine_core.structures import CLASSES, STRUCTURES, VIEWS
from spine_engine.errors import ModelUnavailableError, UnknownStructureError, UnknownViewError
from spine_engine.models import GPU_PROVIDERS, LoadedModel

if TYPE_CHECKING:
    from spine_engine.registry import ModelRegistry

# One image to segment with its chosen U-Nets: (pixels, view, models from `select_models`).
SegmentationJob = tuple[np.ndarray, str, list[LoadedModel]]
_Prepared = dict[tuple[int, int], tuple[np.ndarray, Letterbox]]  # input size -> (U-Net batch, letterbox)


@dataclass
class SegmentationResult:
    view: str
    masks: dict[str, np.ndarray]  # structure -> bool mask at the ORIGINAL image size
    model_frame_masks: dict[str, np.ndarray]  # structure -> bool mask in the letterboxed model frame
    letterbox: Letterbox  # of the first model; see `letterboxes` if a view mixes input sizes
    letterboxes: dict[str, Letterbox]
    timings_ms: dict[str, float]  # preprocess, inference, postprocess (+ refinement when a model refined a mask)
    models_used: list[str]  # model names: the U-Nets in the order of `masks`, then any refinement models that ran
    refined: list[str] = field(default_factory=list)  # structures whose mask came from a refinement model


def select_models(registry: ModelRegistry, view: str, structures: list[str] | None) -> list[LoadedModel]:
    """The servable U-Nets a request names (None = every structure of the view), or the error it deserves."""
    if view not in VIEWS:
        raise UnknownViewError(f"unknown view {view!r}; expected one of {', '.join(VIEWS)}")
    if registry.manifest is None:
        raise ModelUnavailableError(registry.problems)
    available = registry.structures_for(view)
    if structures is None:
        if not available:
            raise UnknownStructureError(f"the manifest has no segmentation models for view {view}")
        structures = available
    if not structures:
        raise UnknownStructureError("no structures requested")
    chosen: list[LoadedModel] = []
    for structure in dict.fromkeys(structures):  # de-duplicated, order kept
        if structure not in available:
            other = STRUCTURES.get(structure)
            if other is not None and other != view:
                why = f"structure {structure!r} belongs to view {other}, not {view}"
            elif other is not None:
                why = f"the manifest has no model for structure {structure!r}"
            else:
                why = f"unknown structure {structure!r}"
            raise UnknownStructureError(f"{why}; {view} structures: {', '.join(available) or 'none'}")
        chosen.append(registry.segmentation_model(structure))  # type: ignore[arg-type]
    registry.require(chosen)
    return chosen


def segment(
    registry: ModelRegistry, work: list[SegmentationJob], source_masks: bool | Collection[str] = True
) -> list[SegmentationResult]:
    """Segment several radiographs (e.g. a study's AP and LAT) with all their U-Nets queued at once.

    Each step runs for all images together, so every result's `timings_ms` holds the wall time of the
    shared preprocess, inference and postprocess steps. `source_masks` says which masks are resized back to
    the original size: all (True), none (False: `masks` stays empty; `model_frame_masks` is all the
    classifier needs) or those of the structures named.
    """

    def prepare(i: int) -> _Prepared:
        # Preprocess once per distinct input size (normally one for the whole view).
        per_size: _Prepared = {}
        for model in work[i][2]:
            if model.input_hw not in per_size:
                x, box = preprocess_image(work[i][0], model.input_hw)
                per_size[model.input_hw] = (to_unet_batch([x]), box)
        return per_size

    t0 = time.perf_counter()
    prepared = registry.parallel_map(prepare, list(range(len(work))))
    # Largest models first, so the slots finish together.
    jobs = [(i, model) for i, (_, _, models) in enumerate(work) for model in models]
    order = sorted(range(len(jobs)), key=lambda k: -jobs[k][1].entry.parameters)
    t1 = time.perf_counter()
    outputs = registry.infer([(jobs[k][1], prepared[jobs[k][0]][jobs[k][1].input_hw][0]) for k in order])
    by_job = dict(zip(order, outputs, strict=True))
    t2 = time.perf_counter()

    def to_source(k: int) -> np.ndarray:
        i, model = jobs[k]
        return source_mask(by_job[k][0, :, :, 0], prepared[i][model.input_hw][1], model.threshold)

    # A refinement model's window is placed from the first stage's source-size mask, so those are needed anyway.
    refiners = {k: r for k, (_, model) in enumerate(jobs) if (r := registry.refinement_model(model.entry.structure or ""))}
    keep = {k for k, (_, model) in enumerate(jobs) if _wanted(source_masks, model.entry.structure)}
    needed = sorted(keep | set(refiners))
    source = dict(zip(needed, registry.parallel_map(to_source, needed), strict=True))
    frame_probabilities = {k: by_job[k][0, :, :, 0] for k in range(len(jobs))}
    t3 = time.perf_counter()
    refined = _refine(registry, work, jobs, refiners, source, frame_probabilities, prepared, keep) if refiners else set()
    t4 = time.perf_counter()
    timings = {"preprocess": (t1 - t0) * 1000, "inference": (t2 - t1) * 1000, "postprocess": (t3 - t2) * 1000}
    if refiners:
        timings["refinement"] = (t4 - t3) * 1000
    results = []
    k = 0
    for i, (_, view, models) in enumerate(work):
        masks: dict[str, np.ndarray] = {}
        frame_masks: dict[str, np.ndarray] = {}
        boxes: dict[str, Letterbox] = {}
        used = [m.name for m in models]
        refined_here: list[str] = []
        for model in models:
            structure = model.entry.structure
            assert structure is not None
            threshold = refiners[k].threshold if k in refined else model.threshold
            frame_masks[structure] = frame_probabilities[k] >= threshold
            if k in keep:
                masks[structure] = source[k]
            boxes[structure] = prepared[i][model.input_hw][1]
            if k in refined:
                used.append(refiners[k].name)
                refined_here.append(structure)
            k += 1
        results.append(
            SegmentationResult(
                view=view,
                masks=masks,
                model_frame_masks=frame_masks,
                letterbox=next(iter(boxes.values())),
                letterboxes=boxes,
                timings_ms=dict(timings),
                models_used=used,
                refined=refined_here,
            )
        )
    return results


def _wanted(source_masks: bool | Collection[str], structure: str | None) -> bool:
    if isinstance(source_masks, bool):
        return source_masks
    return structure in source_masks


def _refine(
    registry: ModelRegistry,
    work: list[SegmentationJob],
    jobs: list[tuple[int, LoadedModel]],
    refiners: dict[int, LoadedModel],
    source: dict[int, np.ndarray],
    frame_probabilities: dict[int, np.ndarray],
    prepared: list[_Prepared],
    keep: set[int],
) -> set[int]:
    """Second stage: re-segment a window around each first-stage mask at the refinement model's resolution.

    The window's probabilities are the refinement model's, or (manifest `combine: mean`) their average
    with the first stage's resampled into the window. Replaces `source[k]` (for the jobs in `keep`, whose
    source masks are wanted) and `frame_probabilities[k]` of each job it refines and returns those jobs.
    A first-stage mask that is empty gives no window: it stays as it is.
    """

    def window(k: int) -> tuple[CropBox, np.ndarray] | None:
        box = CropBox.around_mask(source[k], refiners[k].input_hw)
        if box is None:
            return None
        return box, to_unet_batch([preprocess_crop(work[jobs[k][0]][0], box)])

    windows = registry.parallel_map(window, list(refiners))
    placed = {k: w for k, w in zip(refiners, windows, strict=True) if w is not None}
    outputs = registry.infer([(refiners[k], batch) for k, (_, batch) in placed.items()])

    def back(item: tuple[int, np.ndarray]) -> tuple[int, np.ndarray | None, np.ndarray]:
        k, probabilities = item
        i, model = jobs[k]
        box, refiner, frame = placed[k][0], refiners[k], prepared[i][model.input_hw][1]
        if refiner.entry.combine == "mean":
            probabilities = (probabilities + letterbox_probabilities_to_crop(frame_probabilities[k], frame, box)) / 2
        in_source = crop_probabilities_to_source(probabilities, box) >= refiner.threshold if k in keep else None
        return k, in_source, crop_probabilities_to_letterbox(probabilities, box, frame)

    for k, in_source, in_frame in registry.parallel_map(
        back, [(k, out[0, :, :, 0]) for k, out in zip(placed, outputs, strict=True)]
    ):
        if in_source is not None:
            source[k] = in_source
        frame_probabilities[k] = in_frame
    return set(placed)


def classify_masks(registry: ModelRegistry, model_frame_masks: Mapping[str, np.ndarray]) -> dict[str, tuple[float, float]]:
    """Score masks (in the U-Net's letterboxed frame) Normal/Damaged: one batch per inference slot."""
    model = registry.classifier()
    if model is None:
        raise ModelUnavailableError({"classifier": "the manifest has no classification model"})
    registry.require([model])
    names = list(model_frame_masks)
    if not names:
        return {}
    batch = np.stack([mask_to_classifier_input(model_frame_masks[n], model.input_hw) for n in names])
    batch = batch[..., np.newaxis].astype(np.float32, copy=False)
    # On the CPU each slot's session has one thread: a study's masks split over the slots run side by
    # side (docs/benchmarks.md: classification stage); a GPU takes the whole batch at once.
    parts = 1
    if registry.scheduler.slots > 0 and model.provider not in GPU_PROVIDERS:
        parts = min(registry.scheduler.slots, len(names))
    out = np.concatenate(registry.infer([(model, chunk) for chunk in np.array_split(batch, parts)]))
    classes = model.entry.classes or list(CLASSES)
    i_normal, i_damaged = classes.index(CLASSES[0]), classes.index(CLASSES[1])
    return {n: (float(out[i, i_normal]), float(out[i, i_damaged])) for i, n in enumerate(names)}
