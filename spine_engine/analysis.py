"""What an answer is made of: which models run and which decide, the spine check, the measurement, the label.

`analyze_study` (study.py) is the front door; it decodes and checks the request and calls `analyze` here,
so every entry point (/segment, /classify, the DICOM routes, `spine-batch`, `spine-evaluate`) answers
from the same steps. No web framework here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from spine_core.cobb import CobbResult
from spine_core.preprocessing import letterbox_mask
from spine_core.spine_gate import GateResult, check_spine, image_statistics
from spine_core.vertebrae import VertebraeResult
from spine_engine.decision import VERTEBRA, Decision, RuleOutcome
from spine_engine.decoding import DecodedImage
from spine_engine.engine import Engine
from spine_engine.errors import ModelUnavailableError, NoSpineFoundError, NoValidatedModelError
from spine_engine.localisation import localise, segment_window
from spine_engine.measurement import (
    FirstPass,
    corner_mask,
    corridors,
    landmark_reading,
    measure_spine,
    serves_corner_mask,
    start_first_pass,
)
from spine_engine.models import LoadedModel
from spine_engine.policy import AnalysisPolicy
from spine_engine.registry import ModelRegistry
from spine_engine.segmentation import SegmentationResult, select_models

__all__ = ["VERTEBRA", "AnalysisPolicy", "Decision", "RuleOutcome"]  # re-exported: where callers found them before

DEMO_NOT_RUN = "demonstration model (not validated): not run unless named in `structures` or SPINE_DEMONSTRATION_MODELS=true"
DEMO_NOT_DECIDING = (
    "demonstration model (not validated): its score does not enter the label unless SPINE_DEMONSTRATION_MODELS_DECIDE=true"
)


@dataclass(frozen=True)
class Exclusion:
    view: str
    structure: str | None  # None: the whole view
    reason: str


@dataclass
class SpineReading:
    """The AP spine as the validated vertebra mask shows it."""

    gate: GateResult | None = None
    vertebrae: VertebraeResult | None = None
    cobb: CobbResult | None = None
    windowed: bool = False  # the mask came from a window placed around the spine (full-body film)
    source: str | None = None  # what the vertebrae were read from: the landmark model's name, or "mask"
    overlapped_ms: float = 0.0  # network time that ran beside the U-Net, before the reading (the landmark first pass)

    def measurement_note(self) -> str | None:
        """Why there is no Cobb angle, in plain words (None when there is one or nothing was measured)."""
        if self.cobb is not None:
            return "; ".join(self.cobb.warnings) or None
        if self.vertebrae is None:
            return None
        return f"no Cobb angle: {self.vertebrae.reason or 'the 17 vertebrae T1-L5 were not all found'}"


@dataclass
class ViewAnalysis:
    image: DecodedImage
    result: SegmentationResult
    reading: SpineReading = field(default_factory=SpineReading)


@dataclass
class StudyResult:
    """A study analysed: each view's image, masks and reading, the scores, the decision, what was left out."""

    views: dict[str, ViewAnalysis]
    excluded: list[Exclusion]
    per_mask_raw: dict[str, tuple[float, float]] = field(default_factory=dict)  # the classifier's own softmax
    per_mask: dict[str, float] = field(default_factory=dict)  # calibrated p_damaged
    decision: Decision | None = None
    classifier: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # about the request (e.g. a view that contradicts its DICOM)

    @property
    def models_used(self) -> list[str]:
        return [n for v in self.views.values() for n in v.result.models_used] + ([self.classifier] if self.classifier else [])


def demonstration(registry: ModelRegistry, structures: Iterable[str]) -> set[str]:
    """The structures among `structures` whose model is a demonstration (not validated)."""
    return {s for s in structures if (m := registry.segmentation_model(s)) is not None and not m.entry.validated}


def choose_models(
    registry: ModelRegistry, view: str, structures: list[str] | None, policy: AnalysisPolicy
) -> tuple[list[LoadedModel], list[Exclusion]]:
    """The U-Nets a request runs: those it names, else the view's validated ones (+ demonstrations if the policy says)."""
    if structures is not None:
        return select_models(registry, view, structures), []
    if registry.manifest is None:
        raise ModelUnavailableError(registry.problems)
    available = registry.structures_for(view)
    demo = demonstration(registry, available)
    chosen = [s for s in available if s not in demo or policy.demonstration_models]
    excluded = [Exclusion(view, s, DEMO_NOT_RUN) for s in available if s not in chosen]
    if not chosen:
        raise NoValidatedModelError(
            f"no validated model for the {view} view: its models ({', '.join(available) or 'none'}) are demonstrations "
            "trained on one sample study; name them in `structures` (or set SPINE_DEMONSTRATION_MODELS=true) to run them "
            "anyway, knowing their output is not validated"
        )
    return select_models(registry, view, chosen), excluded


@dataclass
class Selection:
    """The U-Nets each view of a request runs, and what was left out: chosen once, before decoding."""

    models: dict[str, list[LoadedModel]]
    excluded: list[Exclusion]


def choose_study(
    registry: ModelRegistry,
    views: Iterable[str],
    structures: Mapping[str, list[str] | None],
    policy: AnalysisPolicy,
    classify: bool = True,
) -> Selection:
    """`choose_models` for every view; a view with no validated model is left out, the request refused only if all are.

    `classify`: the refusal's advice is for a label (which demonstration models never give), not for masks.
    """
    selection = Selection({}, [])
    refusals: list[NoValidatedModelError] = []
    for view in views:
        try:
            selection.models[view], left_out = choose_models(registry, view, structures.get(view), policy)
            selection.excluded += left_out
        except NoValidatedModelError as exc:
            refusals.append(exc)
            selection.excluded.append(Exclusion(view, None, str(exc)))
    if not selection.models:
        if classify and not policy.demonstration_models_decide:  # naming them in `structures` would not give a label
            views = ", ".join(e.view for e in selection.excluded)
            raise NoValidatedModelError(
                f"no validated model for the {views} view: its models are demonstrations trained on one sample study, "
                "and a label is only given from validated ones; send an AP film (its Ap_Vertebra model is validated), "
                "or see the demonstration masks without a label on /segment (e.g. view=LAT, structures=Lat_Vertebra)"
            )
        raise refusals[0]
    return selection


def _serve_vertebra_mask(result: SegmentationResult, mask: np.ndarray) -> None:
    """A new vertebra mask (bool, the film's size) replaces the U-Net's, in the classifier's frame too."""
    result.masks[VERTEBRA] = mask
    result.model_frame_masks[VERTEBRA] = letterbox_mask(mask, result.model_frame_masks[VERTEBRA].shape)


def read_spine(
    engine: Engine,
    image: DecodedImage,
    result: SegmentationResult,
    policy: AnalysisPolicy,
    first_pass: Future[FirstPass] | None = None,
) -> SpineReading:
    """Localise, check and measure the AP spine on the vertebra mask; updates `result`'s vertebra masks in place.

    With a landmark model, its vertebrae place everything: on a full-body film the U-Net runs again on the
    landmark window (not on the mask's own windows), and the served mask is kept inside the band along the
    17 vertebrae once the spine check has passed. Without one, `localise` does the mask's own localisation.
    `first_pass`: the landmark model's run on this film, started beside the U-Net (`start_first_pass`).
    """
    if result.view != "AP" or VERTEBRA not in result.masks:
        return SpineReading()
    windowed = False
    corners_served = serves_corner_mask(engine.registry, policy)
    frame = (result.model_inputs[VERTEBRA][0, ..., 0], result.letterboxes[VERTEBRA]) if VERTEBRA in result.model_inputs else None
    # Before waiting for the landmark model's first pass: the U-Net usually finishes first, and the spine check's
    # image statistics fill the core it leaves idle.
    statistics = image_statistics(image.pixels)
    landmarks = landmark_reading(engine.registry, image.pixels, policy, frame, first_pass)
    # The spine check judges the whole film: the U-Net's mask before a window's re-segmentation replaces it (a
    # window framed on anything, a micrograph's cells say, shows a column the whole image does not).
    whole_film_mask = result.model_frame_masks[VERTEBRA]
    overlapped = landmarks.overlapped_ms if landmarks is not None else 0.0
    if landmarks is not None:
        result.timings_ms["landmark_inference"] = landmarks.inference_ms
        result.models_used.append(landmarks.model.name)
        if landmarks.tilt_model is not None:
            result.timings_ms["tilt_inference"] = landmarks.tilt_ms
            result.models_used.append(landmarks.tilt_model.name)
        if landmarks.ends_model is not None:
            result.timings_ms["ends_inference"] = landmarks.ends_ms
            result.models_used.append(landmarks.ends_model.name)
        if landmarks.window is not None and policy.localisation and not corners_served:
            windowed, started = True, time.perf_counter()
            _serve_vertebra_mask(result, segment_window(engine.registry, image.pixels, landmarks.window))
            result.timings_ms["window_segmentation"] = (time.perf_counter() - started) * 1000
    # A mask filled from the landmark model's corners replaces the U-Net's: no windowed re-segmentation for it.
    elif policy.localisation and not corners_served:
        localised = localise(engine.registry, image.pixels, result.masks[VERTEBRA])
        if localised.window is not None:  # a full-body film: the windowed pass's chain replaces the plain mask
            windowed = True
            _serve_vertebra_mask(result, localised.mask)
    gate = check_spine(
        whole_film_mask if landmarks is not None else result.model_frame_masks[VERTEBRA],
        statistics,
        result.letterboxes.get(VERTEBRA),
        image.modality,
        landmark_features=landmarks.features(image.height) if landmarks else None,
    )
    if not gate.ok:
        return SpineReading(gate=gate, windowed=windowed, overlapped_ms=overlapped)
    measured = measure_spine(image.pixels, result.masks[VERTEBRA], landmarks)
    if landmarks is not None and corners_served:
        _serve_vertebra_mask(result, corner_mask(landmarks.vertebrae, image.height, image.width))
    elif landmarks is not None and VERTEBRA in result.letterboxes:
        bands = corridors(landmarks.vertebrae, (image.height, image.width), result.letterboxes[VERTEBRA])
        if bands is not None:
            result.masks[VERTEBRA] &= bands[0]
            result.model_frame_masks[VERTEBRA] &= bands[1]
    return SpineReading(
        gate=gate,
        vertebrae=measured.vertebrae,
        cobb=measured.cobb,
        windowed=windowed,
        source=measured.source,
        overlapped_ms=overlapped,
    )


def refuse_unreadable(reading: SpineReading, policy: AnalysisPolicy) -> None:
    if policy.spine_check and reading.gate is not None and not reading.gate.ok:
        raise NoSpineFoundError(reading.gate.reason, reading.gate.features, reading.gate.failed)


def analyze(
    engine: Engine,
    images: Mapping[str, DecodedImage],
    policy: AnalysisPolicy,
    selection: Selection,
    classify: bool = True,
    source_masks: bool = True,
) -> StudyResult:
    """Segment every view (their U-Nets queued together), read the AP spine, and (classify=True) decide the label.

    `selection` is what `choose_study` chose for these views. `source_masks=False`: only the vertebra mask
    (the measurement reads it) is resized to the original size.
    """
    registry = engine.registry
    chosen = selection.models
    classifier = registry.classifier() if classify else None
    if classify:
        if classifier is None:
            raise ModelUnavailableError({"classifier": "the manifest has no classification model"})
        registry.get(classifier.name)
    work = [(images[view].pixels, view, models) for view, models in chosen.items()]
    # The landmark model's first pass needs only the film: queued now, it runs beside the U-Nets.
    reads_ap = "AP" in chosen and any(m.name == VERTEBRA for m in chosen["AP"])
    first_pass = start_first_pass(registry, images["AP"].pixels, policy) if reads_ap else None
    results = engine.segmenter.segment_selected(work, source_masks=True if source_masks else {VERTEBRA})
    study = StudyResult(
        views={view: ViewAnalysis(images[view], result) for view, result in zip(chosen, results, strict=True)},
        excluded=list(selection.excluded),
        classifier=classifier.name if classifier else None,
        timings_ms=dict(results[0].timings_ms),
    )
    started = time.perf_counter()
    for view in study.views.values():
        view.reading = read_spine(engine, view.image, view.result, policy, first_pass if view.result.view == "AP" else None)
        if classify:  # a mask answer may be shown with a warning; a label never comes from an unreadable film
            refuse_unreadable(view.reading, policy)
    # localisation, spine check, vertebrae, Cobb: the geometry, without the networks' runs it waits for (the
    # landmark model's, and the U-Net's on a full-body film's landmark window), each reported on its own
    networks_ms = 0.0
    for stage in ("landmark_inference", "tilt_inference", "ends_inference", "window_segmentation"):
        spent = sum(v.result.timings_ms.get(stage, 0.0) for v in study.views.values())
        if spent:
            study.timings_ms[stage] = spent
            networks_ms += spent
    networks_ms -= sum(v.reading.overlapped_ms for v in study.views.values())  # ran before this loop began
    study.timings_ms["measurement"] = (time.perf_counter() - started) * 1000 - networks_ms
    if classify:
        started = time.perf_counter()
        frame_masks = {s: m for v in study.views.values() for s, m in v.result.model_frame_masks.items()}
        study.per_mask_raw = engine.segmenter.classify_masks(frame_masks)
        study.timings_ms["classification"] = (time.perf_counter() - started) * 1000
        ap = study.views.get("AP")
        study.per_mask, study.decision = engine.rules.decide(
            study.per_mask_raw,
            ap.reading.cobb if ap else None,
            policy.aggregation,
            policy.demonstration_models_decide,
            measured_from=ap.reading.source if ap else None,
        )
        disagreement = engine.rules.disagreement(study.decision)
        if disagreement is not None:
            study.warnings.append(disagreement)
        study.excluded += [
            Exclusion(v.result.view, s, DEMO_NOT_DECIDING)
            for v in study.views.values()
            for s in v.result.model_frame_masks
            if s in engine.rules.demonstration and s not in study.decision.decided_by
        ]
    return study
