"""What an answer is made of: which models run and which decide, the spine check, the measurement, the label.

`/segment`, `/classify`, the DICOM outputs, `spine-batch` and `spine-evaluate` all go through here, so the
figures the project reports describe what a client gets. No web framework here.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from spine_core.calibration import calibrate_p_damaged
from spine_core.cobb import CobbResult, cobb_angles
from spine_core.preprocessing import letterbox_mask
from spine_core.spine_gate import GateResult, check_spine, image_statistics
from spine_core.structures import CLASSES, DAMAGED_COBB_DEG
from spine_core.vertebrae import VertebraeResult, find_vertebrae
from spine_engine import (
    ModelRegistry,
    ModelUnavailableError,
    NoMeasurementError,
    NoSpineFoundError,
    NoValidatedModelError,
    SegmentationResult,
)
from spine_engine.aggregation import CLASSIFIER_RULES, DAMAGED_CUTOFF, aggregate, label_from_cobb
from spine_engine.decoding import DecodedImage
from spine_engine.localisation import localise
from spine_engine.models import LoadedModel

VERTEBRA = "Ap_Vertebra"  # the validated structure the spine check and the measurement read
DEMO_NOT_RUN = "demonstration model (not validated): not run unless named in `structures` or SPINE_DEMONSTRATION_MODELS=true"
DEMO_NOT_DECIDING = (
    "demonstration model (not validated): its score does not enter the label unless SPINE_DEMONSTRATION_MODELS_DECIDE=true"
)


@dataclass(frozen=True)
class AnalysisPolicy:
    """What runs and what decides by default (Settings fields of the same names; docs/trust.md says why)."""

    demonstration_models: bool = False  # run a view's demonstration U-Nets without being asked
    demonstration_models_decide: bool = False  # let their scores enter the label
    aggregation: str = "mean"  # mean | max_score (classifier rules) | cobb (the measured angle)
    localisation: bool = True  # full-body films: keep the vertebra chain, re-segment a window around it
    spine_check: bool = True  # refuse (no_spine_found) what is not a readable AP spine


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

    def measurement_note(self) -> str | None:
        """Why there is no Cobb angle, in plain words (None when there is one or nothing was measured)."""
        if self.cobb is not None:
            return "; ".join(self.cobb.warnings) or None
        if self.vertebrae is None:
            return None
        return f"no Cobb angle: {self.vertebrae.reason or 'the 17 vertebrae T1-L5 were not all found'}"


@dataclass(frozen=True)
class RuleOutcome:
    label: str
    p_damaged: float | None = None  # the classifier rules' probability of Damaged
    max_deg: float | None = None  # the cobb rule's measured angle
    cutoff: float | None = None  # p_damaged, or degrees for the cobb rule


@dataclass
class Decision:
    label: str
    score: float  # calibrated probability of `label`
    p_damaged: float  # calibrated mean p_damaged over the deciding masks
    threshold: float
    rule: str
    decided_by: list[str]
    rules: dict[str, RuleOutcome]


@dataclass
class ViewAnalysis:
    image: DecodedImage
    result: SegmentationResult
    reading: SpineReading = field(default_factory=SpineReading)


@dataclass
class StudyAnalysis:
    views: dict[str, ViewAnalysis]
    excluded: list[Exclusion]
    per_mask_raw: dict[str, tuple[float, float]] = field(default_factory=dict)  # the classifier's own softmax
    per_mask: dict[str, float] = field(default_factory=dict)  # calibrated p_damaged
    decision: Decision | None = None
    classifier: str | None = None
    timings_ms: dict[str, float] = field(default_factory=dict)

    @property
    def models_used(self) -> list[str]:
        return [n for v in self.views.values() for n in v.result.models_used] + ([self.classifier] if self.classifier else [])


def demonstration(registry: ModelRegistry, structures: list[str]) -> set[str]:
    """The structures among `structures` whose model is a demonstration (not validated)."""
    return {s for s in structures if (m := registry.segmentation_model(s)) is not None and not m.entry.validated}


def choose_models(
    registry: ModelRegistry, view: str, structures: list[str] | None, policy: AnalysisPolicy
) -> tuple[list[LoadedModel], list[Exclusion]]:
    """The U-Nets a request runs: those it names, else the view's validated ones (+ demonstrations if the policy says)."""
    if structures is not None:
        return registry.select_models(view, structures), []
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
    return registry.select_models(view, chosen), excluded


def read_spine(registry: ModelRegistry, image: DecodedImage, result: SegmentationResult, policy: AnalysisPolicy) -> SpineReading:
    """Localise, check and measure the AP spine on the vertebra mask; updates `result`'s vertebra masks in place."""
    if result.view != "AP" or VERTEBRA not in result.masks:
        return SpineReading()
    windowed = False
    if policy.localisation:
        localised = localise(registry, image.pixels, result.masks[VERTEBRA])
        if localised.window is not None:  # a full-body film: the windowed pass's chain replaces the plain mask
            windowed = True
            result.masks[VERTEBRA] = localised.mask
            result.model_frame_masks[VERTEBRA] = letterbox_mask(localised.mask, result.model_frame_masks[VERTEBRA].shape)
    gate = check_spine(
        result.model_frame_masks[VERTEBRA], image_statistics(image.pixels), result.letterboxes.get(VERTEBRA), image.modality
    )
    if not gate.ok:
        return SpineReading(gate=gate, windowed=windowed)
    vertebrae = find_vertebrae(result.masks[VERTEBRA])
    corners = vertebrae.corners()
    cobb = None
    if corners is not None:
        try:
            cobb = cobb_angles(corners, image.height, vertebrae.confidences())
        except ValueError as exc:  # degenerate corners: no angle rather than a wrong one
            vertebrae = replace(vertebrae, reason=f"the vertebrae's corners give no angle ({exc})")
    return SpineReading(gate=gate, vertebrae=vertebrae, cobb=cobb, windowed=windowed)


def refuse_unreadable(reading: SpineReading, policy: AnalysisPolicy) -> None:
    if policy.spine_check and reading.gate is not None and not reading.gate.ok:
        raise NoSpineFoundError(reading.gate.reason, reading.gate.features, reading.gate.failed)


def decide(
    registry: ModelRegistry,
    per_mask_raw: Mapping[str, tuple[float, float]],
    cobb: CobbResult | None,
    policy: AnalysisPolicy,
) -> tuple[dict[str, float], Decision]:
    """Calibrated per-mask scores, and the label of the policy's rule with every rule's outcome beside it."""
    classifier = registry.classifier()
    entry = classifier.entry if classifier is not None else None
    calibration = entry.calibration.model_dump() if entry is not None and entry.calibration is not None else None
    threshold = entry.decision_threshold if entry is not None and entry.decision_threshold is not None else DAMAGED_CUTOFF
    per_mask = {s: float(calibrate_p_damaged(p[1], calibration)) for s, p in per_mask_raw.items()}
    demo = demonstration(registry, list(per_mask))
    deciding = [s for s in per_mask if s not in demo or policy.demonstration_models_decide]
    if not deciding:
        raise NoValidatedModelError("only demonstration models ran, and their scores do not decide the label")
    pairs = {s: (1.0 - per_mask[s], per_mask[s]) for s in deciding}
    p_damaged = float(np.mean([per_mask[s] for s in deciding]))
    rules: dict[str, RuleOutcome] = {}
    for name in CLASSIFIER_RULES:
        label, score = aggregate(pairs, name, threshold)
        cutoff = threshold if name == "mean" else None  # max_score has no cut-off of its own
        rules[name] = RuleOutcome(label, p_damaged=score if label == CLASSES[1] else 1.0 - score, cutoff=cutoff)
    if cobb is not None and cobb.reliable is not False:  # a curve whose end vertebrae are uncertain decides nothing
        rules["cobb"] = RuleOutcome(label_from_cobb(cobb.max_deg), max_deg=cobb.max_deg, cutoff=DAMAGED_COBB_DEG)
    if policy.aggregation not in rules:
        raise NoMeasurementError(
            "the cobb rule needs a reliable Cobb angle, and none could be measured on this study (see `warnings`)"
        )
    label = rules[policy.aggregation].label
    score = p_damaged if label == CLASSES[1] else 1.0 - p_damaged
    decided_by = [VERTEBRA] if policy.aggregation == "cobb" else deciding
    return per_mask, Decision(label, score, p_damaged, threshold, policy.aggregation, decided_by, rules)


@dataclass
class Selection:
    """The U-Nets each view of a request runs, and what was left out: chosen once, before decoding."""

    models: dict[str, list[LoadedModel]]
    excluded: list[Exclusion]


def choose_study(
    registry: ModelRegistry, views: Iterable[str], structures: Mapping[str, list[str] | None], policy: AnalysisPolicy
) -> Selection:
    """`choose_models` for every view; a view with no validated model is left out, the request refused only if all are."""
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
        raise refusals[0]
    return selection


def analyze(
    registry: ModelRegistry,
    images: Mapping[str, DecodedImage],
    policy: AnalysisPolicy,
    selection: Selection | None = None,
    classify: bool = True,
    source_masks: bool = True,
) -> StudyAnalysis:
    """Segment every view (their U-Nets queued together), read the AP spine, and (classify=True) decide the label.

    `selection` is what `choose_study` chose for these views (None: the policy's default models of each view).
    `source_masks=False`: only the vertebra mask (the measurement reads it) is resized to the original size.
    """
    selection = selection or choose_study(registry, images, {}, policy)
    chosen = selection.models
    classifier = registry.classifier() if classify else None
    if classify:
        if classifier is None:
            raise ModelUnavailableError({"classifier": "the manifest has no classification model"})
        registry.get(classifier.name)
    work = [(images[view].pixels, view, models) for view, models in chosen.items()]
    results = registry.segment_selected(work, source_masks=True if source_masks else {VERTEBRA})
    study = StudyAnalysis(
        views={view: ViewAnalysis(images[view], result) for view, result in zip(chosen, results, strict=True)},
        excluded=list(selection.excluded),
        classifier=classifier.name if classifier else None,
        timings_ms=dict(results[0].timings_ms),
    )
    started = time.perf_counter()
    for view in study.views.values():
        view.reading = read_spine(registry, view.image, view.result, policy)
        if classify:  # a mask answer may be shown with a warning; a label never comes from an unreadable film
            refuse_unreadable(view.reading, policy)
    study.timings_ms["measurement"] = (time.perf_counter() - started) * 1000  # localisation, spine check, vertebrae, Cobb
    if classify:
        started = time.perf_counter()
        frame_masks = {s: m for v in study.views.values() for s, m in v.result.model_frame_masks.items()}
        study.per_mask_raw = registry.classify_masks(frame_masks)
        study.timings_ms["classification"] = (time.perf_counter() - started) * 1000
        ap = study.views.get("AP")
        study.per_mask, study.decision = decide(registry, study.per_mask_raw, ap.reading.cobb if ap else None, policy)
        demo = demonstration(registry, list(study.per_mask))
        study.excluded += [
            Exclusion(v.result.view, s, DEMO_NOT_DECIDING)
            for v in study.views.values()
            for s in v.result.model_frame_masks
            if s in demo and s not in study.decision.decided_by
        ]
    return study
