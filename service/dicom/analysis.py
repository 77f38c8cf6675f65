"""One DICOM radiograph through the service's own pipeline: the masks /segment returns and the scores /classify uses.

The SEG and SR writers take what this returns; they never run a model themselves: masks, scores, label and
Cobb angles come from the front door, `spine_engine.study.analyze_study`, as `/segment` and `/classify` answer them
for the same file, and every label and finding from the engine's one `DecisionRules`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydicom import Dataset

from service.dicom.source import check_radiograph, dataset_bytes, fill_missing_type2
from spine_engine.analysis import SpineReading
from spine_engine.decision import Decision, DecisionRules, StudyLabel
from spine_engine.engine import Engine
from spine_engine.policy import AnalysisPolicy
from spine_engine.registry import ModelRegistry
from spine_engine.study import Film, StudyRequest, analyze_study

__all__ = ["ModelIdentity", "RadiographAnalysis", "StudyLabel", "analyze_radiograph", "cobb_of", "study_label"]


@dataclass(frozen=True)
class ModelIdentity:
    """What a DICOM object says about the model that made a result (Algorithm Identification)."""

    name: str
    version: str
    sha256: str
    validated: bool
    notes: str | None = None

    @classmethod
    def of(cls, registry: ModelRegistry, name: str) -> ModelIdentity:
        model = registry.models[name]
        entry = model.entry
        return cls(name=entry.name, version=str(entry.version), sha256=model.sha256, validated=entry.validated, notes=entry.notes)


@dataclass
class RadiographAnalysis:
    source: Dataset
    view: str
    masks: dict[str, np.ndarray]  # structure -> bool mask at the source's Rows x Columns
    models: dict[str, list[ModelIdentity]]  # structure -> the U-Net that made its mask (+ its refinement model, if one ran)
    rules: DecisionRules  # the engine's decision: the SR's findings and label read it, as /classify does
    per_mask: dict[str, tuple[float, float]] = field(default_factory=dict)  # structure -> calibrated (p_normal, p_damaged)
    classifier: ModelIdentity | None = None
    measurer: ModelIdentity | None = None  # the landmark model the vertebrae were read from (None: the mask's geometry)
    warnings: list[str] = field(default_factory=list)
    reading: SpineReading = field(default_factory=SpineReading)  # AP: the vertebrae and Cobb angles
    decision: Decision | None = None  # this image's label, as /classify decides it

    @property
    def sop_instance_uid(self) -> str:
        return str(self.source.SOPInstanceUID)


def analyze_radiograph(
    engine: Engine,
    source: Dataset,
    data: bytes | None = None,
    view: str | None = None,
    structures: tuple[str, ...] | None = None,
    classify: bool = True,
    policy: AnalysisPolicy | None = None,
) -> RadiographAnalysis:
    """Segment (and score) one radiograph through the front door. `data` is the file as uploaded; a fetched
    Dataset is serialised in memory."""
    check_radiograph(source)
    request = StudyRequest(
        films=(Film(data=data if data is not None else dataset_bytes(source), filename="source.dcm", view=view),),
        policy=policy or engine.policy,
        structures=structures,
        classify=classify,
        max_pixels=engine.max_pixels,
    )
    study = analyze_study(engine, request)
    analysed_view, analysed = next(iter(study.views.items()))
    warnings = list(study.warnings)
    empty = fill_missing_type2(source)
    if empty:
        warnings.append(f"the source DICOM lacks {', '.join(empty)}; the SEG/SR carry them empty (unknown)")
    registry, result = engine.registry, analysed.result
    models: dict[str, list[ModelIdentity]] = {s: [] for s in result.masks}
    for name in result.models_used:  # the U-Nets in mask order, then any refinement models that ran
        models.setdefault(str(registry.models[name].entry.structure), []).append(ModelIdentity.of(registry, name))
    analysis = RadiographAnalysis(
        source=source,
        view=analysed_view,
        masks=dict(result.masks),
        models=models,
        rules=engine.rules,
        warnings=warnings,
        reading=analysed.reading,
    )
    if classify and study.decision is not None:
        analysis.per_mask = {s: (1.0 - p, p) for s, p in study.per_mask.items()}
        analysis.decision = study.decision
        analysis.classifier = ModelIdentity.of(registry, study.classifier) if study.classifier is not None else None
        source_model = analysed.reading.source
        analysis.measurer = ModelIdentity.of(registry, source_model) if source_model in registry.models else None
    return analysis


def study_label(analyses: Iterable[RadiographAnalysis]) -> StudyLabel:
    """The study's label, as the decision rules make it (one image: its /classify decision)."""
    analyses = list(analyses)
    if not analyses:
        raise ValueError("no analysed image has a label")
    return analyses[0].rules.study_label(a.decision for a in analyses if a.decision is not None)


def cobb_of(analyses: Sequence[RadiographAnalysis]) -> dict | None:
    """The Cobb angles of the study's AP image, as /classify returns them (None when not measured)."""
    ap = next((a for a in analyses if a.view == "AP" and a.reading.cobb is not None), None)
    return ap.reading.cobb.to_dict() if ap is not None and ap.reading.cobb is not None else None
