"""The decision, resolved once when the models load: calibration, cut-off, classes and rules in one object.

Every writer reads `DecisionRules`: the /classify body, the DICOM SR (each mask's finding and the study's
label), DICOMweb `analyze`, `spine-batch` rows and `spine-evaluate`. Nothing else reads the classifier's
manifest entry for a cut-off or writes a class name, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from spine_core.calibration import calibrate_p_damaged, p_damaged_from_angle
from spine_core.cobb import CobbResult
from spine_core.structures import CLASSES, DAMAGED_COBB_DEG
from spine_engine.aggregation import (
    CLASSIFIER_RULES,
    DAMAGED_CUTOFF,
    MAX_ANGLE_RMS_ERROR_DEG,
    MEASURED_RULES,
    aggregate,
    label_from_cobb,
)
from spine_engine.errors import NoMeasurementError, NoValidatedModelError
from spine_engine.registry import ModelRegistry

VERTEBRA = "Ap_Vertebra"  # the validated structure the spine check and the measurement read


@dataclass(frozen=True)
class RuleOutcome:
    label: str
    p_damaged: float | None = None  # the classifier rules' probability of Damaged; the measured rule's from the angle
    max_deg: float | None = None  # the cobb and measured rules' measured angle
    cutoff: float | None = None  # p_damaged, or degrees for the cobb and measured rules


@dataclass
class Decision:
    label: str
    score: float  # calibrated probability of `label`
    p_damaged: float  # calibrated mean p_damaged over the deciding masks; the measured rule's from the angle
    threshold: float  # the p_damaged at or above which `rule` says Damaged
    rule: str
    decided_by: list[str]
    rules: dict[str, RuleOutcome]


@dataclass(frozen=True)
class StudyLabel:
    """The label of a study of several images (DICOMweb `analyze`, the SR of several images)."""

    label: str  # Normal | Damaged
    score: float  # calibrated probability of `label`
    aggregation: str
    masks: int  # how many per-mask scores entered it


@dataclass(frozen=True)
class DecisionRules:
    """What turns the classifier's raw scores (or the Cobb angle) into a label; built once per registry."""

    classifier: str | None  # the classification model's name
    calibration: Mapping[str, Any] | None  # the manifest's map applied to p_damaged (None: raw scores)
    threshold: float  # calibrated p_damaged at or above which a mask, or the mean rule, says Damaged
    demonstration: frozenset[str]  # structures whose model is a demonstration (never decides by default)
    normal: str = CLASSES[0]
    damaged: str = CLASSES[1]
    cobb_cutoff_deg: float = DAMAGED_COBB_DEG

    @classmethod
    def of(cls, registry: ModelRegistry) -> DecisionRules:
        classifier = registry.classifier()
        entry = classifier.entry if classifier is not None else None
        calibration = entry.calibration.model_dump() if entry is not None and entry.calibration is not None else None
        threshold = entry.decision_threshold if entry is not None and entry.decision_threshold is not None else DAMAGED_CUTOFF
        demonstration = frozenset(
            m.entry.structure
            for m in registry.models.values()
            if m.entry.kind == "segmentation" and m.entry.structure is not None and not m.entry.validated
        )
        return cls(classifier.name if classifier else None, calibration, float(threshold), demonstration)

    def calibrate(self, p_damaged_raw: float) -> float:
        return float(calibrate_p_damaged(p_damaged_raw, dict(self.calibration) if self.calibration else None))

    def finding(self, p_damaged: float, cutoff: float | None = None) -> str:
        """The label one calibrated p_damaged gets at the cut-off (the classifier's unless given): each mask's SR
        finding, the mean rule's label, a study's label at its rules' mean cut-off."""
        return self.damaged if p_damaged >= (self.threshold if cutoff is None else cutoff) else self.normal

    def score_of(self, label: str, p_damaged: float) -> float:
        """The probability of `label` given the probability of Damaged."""
        return p_damaged if label == self.damaged else 1.0 - p_damaged

    def decide(
        self,
        per_mask_raw: Mapping[str, tuple[float, float]],
        cobb: CobbResult | None,
        aggregation: str,
        demonstrations_decide: bool,
        measured_from: str | None = None,
    ) -> tuple[dict[str, float], Decision]:
        """Calibrated per-mask scores, and the label of the `aggregation` rule with every rule's outcome beside it.

        `measured_from`: what the vertebrae behind `cobb` were read from (the landmark model's name, or "mask"),
        which sets how far the measured rule trusts the angle. The measured rule on a film without a measurement
        is decided by the mean rule, and says so (`rule` "mean")."""
        per_mask = {s: self.calibrate(p[1]) for s, p in per_mask_raw.items()}
        deciding = [s for s in per_mask if s not in self.demonstration or demonstrations_decide]
        if not deciding:
            raise NoValidatedModelError(
                "only demonstration models ran, and their scores do not decide the label: send an AP film (its "
                "Ap_Vertebra model is validated), or use /segment to see the demonstration masks"
            )
        pairs = {s: (1.0 - per_mask[s], per_mask[s]) for s in deciding}
        mean_p_damaged = float(np.mean([per_mask[s] for s in deciding]))
        rules: dict[str, RuleOutcome] = {}
        for name in CLASSIFIER_RULES:
            label, score = aggregate(pairs, name, self.threshold)
            cutoff = self.threshold if name == "mean" else None  # max_score has no cut-off of its own
            rules[name] = RuleOutcome(label, p_damaged=self.score_of(label, score), cutoff=cutoff)
        if cobb is not None:
            rms = MAX_ANGLE_RMS_ERROR_DEG.get(measured_from or "", max(MAX_ANGLE_RMS_ERROR_DEG.values()))
            by_angle = RuleOutcome(
                label_from_cobb(cobb.max_deg, self.cobb_cutoff_deg),
                p_damaged=p_damaged_from_angle(cobb.max_deg, rms, self.cobb_cutoff_deg),
                max_deg=cobb.max_deg,
                cutoff=self.cobb_cutoff_deg,
            )
            rules["measured"] = by_angle
            if cobb.reliable is not False:  # a curve whose end vertebrae are uncertain decides nothing by this rule
                rules["cobb"] = by_angle
        rule = "mean" if aggregation == "measured" and "measured" not in rules else aggregation
        if rule not in rules:
            raise NoMeasurementError(
                "the cobb rule needs a reliable Cobb angle, and none could be measured on this study (see `warnings`)"
            )
        outcome = rules[rule]
        if rule in MEASURED_RULES:  # p_damaged_from_angle is 0.5 exactly at the cut-off angle
            decided_by, threshold, p_damaged = [VERTEBRA], 0.5, float(outcome.p_damaged)  # type: ignore[arg-type]
        else:
            decided_by, threshold, p_damaged = deciding, self.threshold, mean_p_damaged
        return per_mask, Decision(
            outcome.label, self.score_of(outcome.label, p_damaged), p_damaged, threshold, rule, decided_by, rules
        )

    def disagreement(self, decision: Decision) -> str | None:
        """A warning when a label decided by the measured angle differs from the classifier's own reading."""
        classifier, measured = decision.rules.get("mean"), decision.rules.get(decision.rule)
        if decision.rule not in MEASURED_RULES or classifier is None or measured is None or measured.max_deg is None:
            return None
        if classifier.label == decision.label:
            return None
        return (
            f"the mask classifier reads this film as {classifier.label} (p_damaged {classifier.p_damaged:.2f}); the label "
            f"follows the measured largest Cobb angle, {measured.max_deg:.1f}° against the {self.cobb_cutoff_deg:g}° line"
        )

    def study_label(self, decisions: Iterable[Decision]) -> StudyLabel:
        """One image: its decision as /classify makes it. Several: the mean of their p_damaged against the mean of
        their rules' cut-offs (each image decided by its own rule; with one rule throughout, its own cut-off)."""
        decisions = list(decisions)
        if not decisions:
            raise ValueError("no analysed image has a label")
        if len(decisions) == 1:
            d = decisions[0]
            return StudyLabel(label=d.label, score=float(d.score), aggregation=d.rule, masks=len(d.decided_by))
        p_damaged = float(np.mean([d.p_damaged for d in decisions]))
        cutoff = float(np.mean([d.threshold for d in decisions]))
        label = self.finding(p_damaged, cutoff)
        rules = sorted({d.rule for d in decisions})
        aggregation = "mean" if rules == ["mean"] else "mean of " + ", ".join(rules)
        return StudyLabel(label, self.score_of(label, p_damaged), aggregation, sum(len(d.decided_by) for d in decisions))
