"""The `Segmenter`: choose the U-Nets, segment, refine, score masks, on a registry's models.

`select_models` checks a request (view, structures) once and returns the models; the other methods take
those models, so nothing downstream checks the request again. One `_Job` record per (image, U-Net) carries
everything its steps produce (input, output, masks, refinement), instead of parallel index dictionaries.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

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
    # structure -> its U-Net's (1, H, W, 1) input: another model of the same input size reads it, not the film again
    model_inputs: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class _Job:
    """One U-Net on one image, and what each step made of it."""

    image: int  # index into the work list
    model: LoadedModel
    batch: np.ndarray  # the U-Net's input (shared by the image's models of the same input size)
    letterbox: Letterbox
    keep: bool  # the source-size mask is wanted
    refiner: LoadedModel | None = None  # the second-stage model, when refinement is on and one is loaded
    frame_probabilities: np.ndarray | None = None  # the model's output (or the refined one) in its letterboxed frame
    source: np.ndarray | None = None  # bool mask at the original size
    window: tuple[CropBox, np.ndarray] | None = None  # the refinement window and its input
    refined: bool = False

    @property
    def structure(self) -> str:
        assert self.model.entry.structure is not None
        return self.model.entry.structure

    @property
    def threshold(self) -> float:
        return self.refiner.threshold if self.refined and self.refiner is not None else self.model.threshold


class Segmenter:
    """Segmentation and mask scoring on `registry`'s models (every session run through its scheduler)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def select_models(self, view: str, structures: list[str] | None = None) -> list[LoadedModel]:
        """Check a request once: the servable U-Nets it names, or the error it deserves."""
        return select_models(self.registry, view, structures)

    def resolve_structures(self, view: str, structures: list[str] | None = None) -> list[str]:
        """The structures `segment` would run, or the error it would raise (before the expensive work)."""
        return [m.entry.structure for m in self.select_models(view, structures)]  # type: ignore[misc]

    def segment(self, image: np.ndarray, view: str, structures: list[str] | None = None) -> SegmentationResult:
        """Segment one decoded radiograph (any dtype, gray or colour) with the U-Nets of its view."""
        return self.segment_many([(image, view, structures)])[0]

    def segment_many(
        self, work: list[tuple[np.ndarray, str, list[str] | None]], source_masks: bool | Collection[str] = True
    ) -> list[SegmentationResult]:
        """Segment several radiographs (e.g. a study's AP and LAT) with all their U-Nets queued at once."""
        jobs = [(image, view, self.select_models(view, structures)) for image, view, structures in work]
        return segment(self.registry, jobs, source_masks)

    def segment_selected(
        self, work: list[SegmentationJob], source_masks: bool | Collection[str] = True
    ) -> list[SegmentationResult]:
        """`segment_many` for requests already checked by `select_models` (pixels, view, models)."""
        return segment(self.registry, work, source_masks)

    def classify_masks(self, model_frame_masks: Mapping[str, np.ndarray]) -> dict[str, tuple[float, float]]:
        """Score masks (in the U-Net's letterboxed frame) Normal/Damaged: one batch per inference slot."""
        return classify_masks(self.registry, model_frame_masks)


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
    jobs = [
        _Job(
            image=i,
            model=model,
            batch=prepared[i][model.input_hw][0],
            letterbox=prepared[i][model.input_hw][1],
            keep=_wanted(source_masks, model.entry.structure),
            refiner=registry.refinement_model(model.entry.structure or ""),
        )
        for i, (_, _, models) in enumerate(work)
        for model in models
    ]
    # Largest models first, so the slots finish together.
    order = sorted(jobs, key=lambda job: -job.model.entry.parameters)
    t1 = time.perf_counter()
    for job, out in zip(order, registry.infer([(job.model, job.batch) for job in order]), strict=True):
        job.frame_probabilities = out[0, :, :, 0]
    t2 = time.perf_counter()

    # A refinement model's window is placed from the first stage's source-size mask, so those are needed anyway.
    needed = [job for job in jobs if job.keep or job.refiner is not None]

    def to_source(job: _Job) -> np.ndarray:
        return source_mask(job.frame_probabilities, job.letterbox, job.model.threshold)

    for job, mask in zip(needed, registry.parallel_map(to_source, needed), strict=True):
        job.source = mask
    t3 = time.perf_counter()
    refining = [job for job in jobs if job.refiner is not None]
    if refining:
        _refine(registry, work, refining)
    t4 = time.perf_counter()
    timings = {"preprocess": (t1 - t0) * 1000, "inference": (t2 - t1) * 1000, "postprocess": (t3 - t2) * 1000}
    if refining:
        timings["refinement"] = (t4 - t3) * 1000
    results = []
    for i, (_, view, models) in enumerate(work):
        mine = [job for job in jobs if job.image == i]
        refined = [job for job in mine if job.refined]
        boxes = {job.structure: job.letterbox for job in mine}
        results.append(
            SegmentationResult(
                view=view,
                masks={job.structure: job.source for job in mine if job.keep},  # type: ignore[misc]
                model_frame_masks={job.structure: job.frame_probabilities >= job.threshold for job in mine},  # type: ignore[operator]
                letterbox=next(iter(boxes.values())),
                letterboxes=boxes,
                timings_ms=dict(timings),
                models_used=[m.name for m in models] + [job.refiner.name for job in refined],  # type: ignore[union-attr]
                refined=[job.structure for job in refined],
                model_inputs={job.structure: job.batch for job in mine},
            )
        )
    return results


def _wanted(source_masks: bool | Collection[str], structure: str | None) -> bool:
    if isinstance(source_masks, bool):
        return source_masks
    return structure in source_masks


def _refine(registry: ModelRegistry, work: list[SegmentationJob], jobs: list[_Job]) -> None:
    """Second stage: re-segment a window around each first-stage mask at the refinement model's resolution.

    The window's probabilities are the refinement model's, or (manifest `combine: mean`) their average
    with the first stage's resampled into the window. Replaces each refined job's `frame_probabilities` and
    (when its source-size mask is wanted) `source`, and marks it `refined`. A first-stage mask that is
    empty gives no window: it stays as it is.
    """

    def window(job: _Job) -> tuple[CropBox, np.ndarray] | None:
        box = CropBox.around_mask(job.source, job.refiner.input_hw)  # type: ignore[arg-type, union-attr]
        if box is None:
            return None
        return box, to_unet_batch([preprocess_crop(work[job.image][0], box)])

    for job, placed in zip(jobs, registry.parallel_map(window, jobs), strict=True):
        job.window = placed
    placed_jobs = [job for job in jobs if job.window is not None]
    outputs = registry.infer([(job.refiner, job.window[1]) for job in placed_jobs])  # type: ignore[misc, index]

    def back(item: tuple[_Job, np.ndarray]) -> tuple[np.ndarray | None, np.ndarray]:
        job, probabilities = item
        box, refiner = job.window[0], job.refiner  # type: ignore[index]
        assert refiner is not None
        if refiner.entry.combine == "mean":
            probabilities = (probabilities + letterbox_probabilities_to_crop(job.frame_probabilities, job.letterbox, box)) / 2
        in_source = crop_probabilities_to_source(probabilities, box) >= refiner.threshold if job.keep else None
        return in_source, crop_probabilities_to_letterbox(probabilities, box, job.letterbox)

    items = [(job, out[0, :, :, 0]) for job, out in zip(placed_jobs, outputs, strict=True)]
    for job, (in_source, in_frame) in zip(placed_jobs, registry.parallel_map(back, items), strict=True):
        if in_source is not None:
            job.source = in_source
        job.frame_probabilities = in_frame
        job.refined = True


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
