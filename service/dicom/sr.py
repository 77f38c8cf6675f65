"""DICOM Structured Report (TID 1500 Measurement Report, highdicom) of a study's analysis.

Content, each group tied to its images and, per mask, to the SEG segment it scores:
- the study label: Finding Normal/Abnormal (Damaged) and its score (the probability of that label) with the
  aggregation rule, referencing every source image;
- one planar ROI group per mask: the mask's probability of Damaged and its Normal/Abnormal finding (at the
  engine's calibrated cut-off, as /classify's label), referencing the SEG segment (and through it the source image);
- the Cobb extension point: `cobb_groups` turns the `cobb` dict of the /classify response (`CobbOut` in
  spine_engine/schemas.py) into Cobb-angle measurements with the end vertebrae as finding sites.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from service.dicom.analysis import ModelIdentity, RadiographAnalysis, StudyLabel
from service.dicom.seg import MANUFACTURER, MODEL_NAME, SR_SERIES_NUMBER, seg_frames, structure_coding
from service.dicom.source import copied_from_source
from spine_engine.aggregation import MEASURED_RULES

FINDING = codes.SCT.Finding
FINDING_VALUES = {"Normal": codes.SCT.Normal, "Damaged": codes.SCT.Abnormal}
PROBABILITY = codes.DCM.Probability
UNITLESS = codes.UCUM.NoUnits
SEVERITY_VALUES = {"mild": codes.SCT.Mild, "moderate": codes.SCT.Moderate, "severe": codes.SCT.Severe}
DEVICE_UID = generate_uid(entropy_srcs=["spine-xray inference service"])  # one observer device, stable across runs


def _algorithm(model: ModelIdentity | None, *extra: str) -> hd.sr.AlgorithmIdentification | None:
    if model is None:
        return None
    return hd.sr.AlgorithmIdentification(
        name=model.name,
        version=model.version,
        parameters=[f"sha256={model.sha256}", f"validated={str(model.validated).lower()}", *extra],
    )


def _tracking(text: str) -> hd.sr.TrackingIdentifier:
    return hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=text[:64])


def _probability(value: float) -> hd.sr.Measurement:
    return hd.sr.Measurement(name=PROBABILITY, value=round(float(value), 6), unit=UNITLESS)


def study_label_group(analyses: Sequence[RadiographAnalysis], label: StudyLabel) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """The study's Normal/Damaged label; `Probability` is the probability of that label under `label.aggregation`.
    Its algorithm is the classifier, or for a label decided by the measured angle the landmark model it rests on."""
    deciders = [
        a.measurer if a.decision is not None and a.decision.rule in MEASURED_RULES and a.measurer else a.classifier
        for a in analyses
    ]
    algorithm = next((m for m in deciders if m is not None), None)
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(f"Study label {label.label} (probability of {label.label})"),
        algorithm_id=_algorithm(algorithm, f"aggregation={label.aggregation}", f"masks={label.masks}"),
        finding_sites=[hd.sr.FindingSite(anatomic_location=codes.SCT.Spine)],
        measurements=[_probability(label.score)],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=FINDING, value=FINDING_VALUES[label.label])],
        source_images=[hd.sr.SourceImageForMeasurementGroup.from_source_image(a.source) for a in analyses],
    )


def segment_reference(seg: Dataset, source: Dataset, frame: int, segment: int) -> hd.sr.ReferencedSegmentationFrame:
    """The SEG frame that holds `segment`, and the (single-frame) source image it segments.

    Built by hand rather than with `from_segmentation`, which gives the source image the SEG's frame number.
    The frame alone names the segment: the Image SOP Instance Reference macro allows Referenced Segment Number
    only when no Referenced Frame Number is present (dciodvfy flags both), so the segment number is dropped.
    """
    reference = hd.sr.ReferencedSegmentationFrame(
        sop_class_uid=seg.SOPClassUID,
        sop_instance_uid=seg.SOPInstanceUID,
        frame_number=frame,
        segment_number=segment,
        source_image=hd.sr.SourceImageForSegmentation(source.SOPClassUID, source.SOPInstanceUID),
    )
    for item in reference:
        for ref in item.get("ReferencedSOPSequence", []):
            if "ReferencedFrameNumber" in ref and "ReferencedSegmentNumber" in ref:
                del ref.ReferencedSegmentNumber
    return reference


def mask_groups(analysis: RadiographAnalysis, seg: Dataset) -> list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations]:
    """One group per scored mask: its probability of Damaged and finding, referencing its SEG segment."""
    frames = seg_frames(seg)
    numbers = {str(item.SegmentLabel): int(item.SegmentNumber) for item in seg.SegmentSequence}
    groups = []
    for structure, (_p_normal, p_damaged) in analysis.per_mask.items():
        number = numbers[structure]
        finding = FINDING_VALUES[analysis.rules.finding(p_damaged)]  # the cut-off /classify uses, not 0.5
        groups.append(
            hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=_tracking(f"{structure} mask (probability of Damaged)"),
                referenced_segment=segment_reference(seg, analysis.source, frames[number], number),
                finding_type=structure_coding(structure).property_type,
                algorithm_id=_algorithm(analysis.classifier, f"mask_model={analysis.models[structure][0].name}"),
                measurements=[_probability(p_damaged)],
                qualitative_evaluations=[hd.sr.QualitativeEvaluation(name=FINDING, value=finding)],
            )
        )
    return groups


def vertebra_code(level: str | None) -> Code | None:
    """'T5' -> SCT 'T5 vertebra' from pydicom's tables; None for a level the tables do not name."""
    if not level:
        return None
    return getattr(codes.SCT, f"{level.strip().upper()}Vertebra", None)


def cobb_groups(cobb: Mapping[str, Any], source: Dataset) -> list[hd.sr.MeasurementsAndQualitativeEvaluations]:
    """The extension point for Cobb angles: one group per curve (angle, upper/lower end and apex vertebrae as finding
    sites, in that order) and one for the largest angle with its severity, all on the AP source image."""
    image = [hd.sr.SourceImageForMeasurementGroup.from_source_image(source)]
    groups = []
    for curve in cobb.get("curves") or []:
        ends = [curve.get("upper_end"), curve.get("lower_end"), curve.get("apex")]
        sites = [hd.sr.FindingSite(anatomic_location=code) for code in map(vertebra_code, ends) if code is not None]
        text = f"Cobb {curve.get('name', 'curve')} {ends[0]}-{ends[1]} apex {ends[2]}"
        angle = hd.sr.Measurement(
            name=codes.SCT.CobbAngle,
            value=round(float(curve["angle_deg"]), 3),
            unit=codes.UCUM.Degree,
            finding_sites=sites or None,
        )
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=_tracking(text), measurements=[angle], source_images=image
            )
        )
    if cobb.get("max_deg") is not None:
        largest = hd.sr.Measurement(
            name=codes.SCT.CobbAngle, value=round(float(cobb["max_deg"]), 3), unit=codes.UCUM.Degree, derivation=codes.SCT.Maximum
        )
        severity = SEVERITY_VALUES.get(str(cobb.get("severity", "")).lower())
        evaluations = [hd.sr.QualitativeEvaluation(name=codes.SCT.Severity, value=severity)] if severity else None
        text = f"Largest Cobb angle, {cobb.get('curve', '?')}-shaped curve, severity {cobb.get('severity', 'unknown')}"
        groups.append(
            hd.sr.MeasurementsAndQualitativeEvaluations(
                tracking_identifier=_tracking(text),
                measurements=[largest],
                qualitative_evaluations=evaluations,
                source_images=image,
            )
        )
    return groups


def build_measurement_report(
    analyses: Sequence[RadiographAnalysis],
    segmentations: Sequence[Dataset],
    label: StudyLabel,
    cobb: Mapping[str, Any] | None = None,
) -> hd.sr.ComprehensiveSR:
    """TID 1500 report of a study: `segmentations[i]` is the SEG of `analyses[i]`; `cobb` (AP only) is optional."""
    if len(analyses) != len(segmentations) or not analyses:
        raise ValueError("one SEG per analysed image, at least one image")
    groups: list[Any] = [study_label_group(analyses, label)]
    for analysis, seg in zip(analyses, segmentations, strict=True):
        groups.extend(mask_groups(analysis, seg))
    if cobb:
        ap = next((a for a in analyses if a.view == "AP"), analyses[0])
        groups.extend(cobb_groups(cobb, ap.source))
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=DEVICE_UID, name=MODEL_NAME, manufacturer_name=MANUFACTURER, model_name=MODEL_NAME
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=codes.SCT.ImagingProcedure,
        imaging_measurements=groups,
        title=codes.DCM.ImagingMeasurementReport,
    )
    with copied_from_source("Structured Report"):
        sr = hd.sr.ComprehensiveSR(
            evidence=[*(a.source for a in analyses), *segmentations],
            content=report,
            series_instance_uid=generate_uid(),
            series_number=SR_SERIES_NUMBER,
            sop_instance_uid=generate_uid(),
            instance_number=1,
            manufacturer=MANUFACTURER,
            is_complete=True,
            transfer_syntax_uid=ExplicitVRLittleEndian,
        )
    sr.SeriesDescription = "spine-xray measurement report"
    return sr
