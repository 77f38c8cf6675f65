"""One DICOM radiograph through the service's own pipeline: the masks /segment returns and the scores /classify uses.

The SEG and SR writers take what this returns; they never run a model themselves, so the masks in a SEG are
the masks `/segment` answers for the same file (decode_image -> registry.segment), and the scores in an SR
are those of `registry.classify_masks` + `aggregate`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydicom import Dataset

from service.decoding import decode_image
from service.dicom.source import check_radiograph, dataset_bytes, fill_missing_type2
from service.inference import ModelRegistry, UnknownViewError, aggregate
from service.pipeline import canonical_view


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
    per_mask: dict[str, tuple[float, float]] = field(default_factory=dict)  # structure -> (p_normal, p_damaged)
    classifier: ModelIdentity | None = None
    warnings: list[str] = field(default_factory=list)

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
) -> RadiographAnalysis:
    """Segment (and score) one radiograph. `data` is the file as uploaded; a fetched Dataset is serialised in memory."""
    check_radiograph(source)
    requested = canonical_view(view)
    if requested is not None:
        registry.resolve_structures(requested, structures)  # fail fast, before decoding
    decoded = decode_image(data if data is not None else dataset_bytes(source), max_pixels, "source.dcm")
    warnings: list[str] = []
    if requested is None:
        if decoded.view is None:
            raise UnknownViewError(
                f"the DICOM ViewPosition ({str(source.get('ViewPosition', '')) or 'absent'}) names no AP or LAT view; send `view`"
            )
        requested = decoded.view
    elif decoded.view is not None and decoded.view != requested:
        warnings.append(f"the DICOM ViewPosition says {decoded.view}; segmented as {requested} as requested")
    empty = fill_missing_type2(source)
    if empty:
        warnings.append(f"the source DICOM lacks {', '.join(empty)}; the SEG/SR carry them empty (unknown)")
    result = registry.segment(decoded.pixels, requested, structures)
    models: dict[str, list[ModelIdentity]] = {s: [] for s in result.masks}
    for name in result.models_used:  # the U-Nets in mask order, then any refinement models that ran
        models.setdefault(str(registry.models[name].entry.structure), []).append(ModelIdentity.of(registry, name))
    analysis = RadiographAnalysis(source=source, view=requested, masks=dict(result.masks), models=models, warnings=warnings)
    if classify:
        classifier = registry.classifier()
        analysis.per_mask = registry.classify_masks(result.model_frame_masks)
        analysis.classifier = ModelIdentity.of(registry, classifier.name) if classifier is not None else None
    return analysis


@dataclass(frozen=True)
class StudyLabel:
    label: str  # Normal | Damaged
    score: float  # probability of `label` under `aggregation`
    aggregation: str
    masks: int  # how many per-mask scores entered it


def study_label(analyses: Iterable[RadiographAnalysis], aggregation: str) -> StudyLabel:
    """The label of everything analysed (every mask of every image), as /classify aggregates a study."""
    pairs: Sequence[tuple[float, float]] = [p for a in analyses for p in a.per_mask.values()]
    label, score = aggregate(pairs, aggregation)
    return StudyLabel(label=label, score=float(score), aggregation=aggregation, masks=len(pairs))
