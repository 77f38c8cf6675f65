"""One DICOM radiograph through the service's own pipeline: the masks /segment returns and the scores /classify uses.

The SEG and SR writers take what this returns; they never run a model themselves: masks, scores, label and
Cobb angles come from `spine_engine.analysis.analyze`, as `/segment` and `/classify` answer them for the same file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydicom import Dataset

from service.dicom.source import check_radiograph, dataset_bytes, fill_missing_type2
from service.pipeline import canonical_view
from spine_engine import ModelRegistry, UnknownViewError
from spine_engine.analysis import AnalysisPolicy, Decision, SpineReading, analyze, choose_study
from spine_engine.decoding import decode_image


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
    per_mask: dict[str, tuple[float, float]] = field(default_factory=dict)  # structure -> calibrated (p_normal, p_damaged)
    classifier: ModelIdentity | None = None
    warnings: list[str] = field(default_factory=list)
    reading: SpineReading = field(default_factory=SpineReading)  # AP: the vertebrae and Cobb angles
    decision: Decision | None = None  # this image's label, as /classify decides it

    @property
    def sop_instance_uid(self) -> str:
        return str(self.source.SOPInstanceUID)


def analyze_radiograph(
    registry: ModelRegistry,
    source: Dataset,
    data: bytes | None = None,
    view: str | None = None,
    structures: list[str] | None = None,
    max_pixels: int = 100_000_000,
    classify: bool = True,
    policy: AnalysisPolicy | None = None,
) -> RadiographAnalysis:
    """Segment (and score) one radiograph. `data` is the file as uploaded; a fetched Dataset is serialised in memory."""
    check_radiograph(source)
    requested = canonical_view(view)
    policy = policy or AnalysisPolicy()
    # Checked once: before decoding when the view is given, else once the DICOM has said it.
    selection = choose_study(registry, [requested], {requested: structures}, policy) if requested is not None else None
    decoded = decode_image(data if data is not None else dataset_bytes(source), max_pixels, "source.dcm")
    warnings: list[str] = []
    if requested is None:
        if decoded.view is None:
            raise UnknownViewError(
                f"the DICOM ViewPosition ({str(source.get('ViewPosition', '')) or 'absent'}) names no AP or LAT view; send `view`"
            )
        requested = decoded.view
        selection = choose_study(registry, [requested], {requested: structures}, policy)
    elif decoded.view is not None and decoded.view != requested:
        warnings.append(f"the DICOM ViewPosition says {decoded.view}; segmented as {requested} as requested")
    empty = fill_missing_type2(source)
    if empty:
        warnings.append(f"the source DICOM lacks {', '.join(empty)}; the SEG/SR carry them empty (unknown)")
    study = analyze(registry, {requested: decoded}, policy, selection, classify=classify)
    analysed = study.views[requested]
    result = analysed.result
    models: dict[str, list[ModelIdentity]] = {s: [] for s in result.masks}
    for name in result.models_used:  # the U-Nets in mask order, then any refinement models that ran
        models.setdefault(str(registry.models[name].entry.structure), []).append(ModelIdentity.of(registry, name))
    analysis = RadiographAnalysis(
        source=source, view=requested, masks=dict(result.masks), models=models, warnings=warnings, reading=analysed.reading
    )
    if classify and study.decision is not None:
        classifier = registry.classifier()
        analysis.per_mask = {s: (1.0 - p, p) for s, p in study.per_mask.items()}
        analysis.decision = study.decision
        analysis.classifier = ModelIdentity.of(registry, classifier.name) if classifier is not None else None
    return analysis


@dataclass(frozen=True)
class StudyLabel:
    label: str  # Normal | Damaged
    score: float  # calibrated probability of `label`
    aggregation: str
    masks: int  # how many per-mask scores entered it


def study_label(analyses: Iterable[RadiographAnalysis]) -> StudyLabel:
    """The study's label: the one image's decision as /classify makes it; several images: the mean of their
    calibrated p_damaged against the same threshold (each image decided by its validated masks)."""
    decisions = [a.decision for a in analyses if a.decision is not None]
    if not decisions:
        raise ValueError("no analysed image has a label")
    if len(decisions) == 1:
        d = decisions[0]
        return StudyLabel(label=d.label, score=float(d.score), aggregation=d.rule, masks=len(d.decided_by))
    p_damaged = float(np.mean([d.p_damaged for d in decisions]))
    damaged = p_damaged >= decisions[0].threshold
    return StudyLabel(
        label="Damaged" if damaged else "Normal",
        score=p_damaged if damaged else 1.0 - p_damaged,
        aggregation="mean",
        masks=sum(len(d.decided_by) for d in decisions),
    )


def cobb_of(analyses: Sequence[RadiographAnalysis]) -> dict | None:
    """The Cobb angles of the study's AP image, as /classify returns them (None when not measured)."""
    ap = next((a for a in analyses if a.view == "AP" and a.reading.cobb is not None), None)
    return ap.reading.cobb.to_dict() if ap is not None and ap.reading.cobb is not None else None
