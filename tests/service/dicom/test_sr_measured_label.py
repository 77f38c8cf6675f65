"""The study label in the SR under the default `measured` rule: decided by the measured angle, as /classify's is, and
attributed to the landmark model it rests on (the classifier when the `mean` rule decides)."""

from __future__ import annotations

import io
from pathlib import Path

import highdicom as hd
import numpy as np
import pytest
from PIL import Image
from pydicom.sr.codedict import codes
from spine_dicom_testlib import dx_dataset, to_bytes

from service.dicom.analysis import analyze_radiograph, study_label
from service.dicom.seg import build_segmentation
from service.dicom.source import read_dataset
from service.dicom.sr import build_measurement_report
from spine_core.structures import CLASSIFIER_MODEL_NAME, LANDMARK_MODEL_NAME
from spine_engine import ModelRegistry
from spine_engine.engine import Engine
from spine_engine.policy import AnalysisPolicy

FILM = Path(__file__).resolve().parents[3] / "docs" / "examples" / "synthetic_ap.jpg"


def study_group(registry: ModelRegistry, aggregation: str):
    pixels = np.asarray(Image.open(FILM).convert("L"), dtype=np.uint8)
    data = to_bytes(dx_dataset(pixels))
    analysis = analyze_radiograph(Engine(registry, AnalysisPolicy(aggregation=aggregation)), read_dataset(data), data)
    label = study_label([analysis])
    sr = build_measurement_report([analysis], [build_segmentation(analysis)], label, analysis.reading.cobb.to_dict())
    buf = io.BytesIO()
    sr.save_as(buf)
    parsed = hd.sr.srread(io.BytesIO(buf.getvalue()))
    (group,) = [g for g in parsed.content.get_image_measurement_groups() if str(g.tracking_identifier).startswith("Study label")]
    return analysis, label, group


@pytest.mark.parametrize("aggregation", ["measured", "mean"])
def test_the_sr_study_label_names_what_decided_it(committed_registry: ModelRegistry, aggregation: str) -> None:
    if committed_registry.landmark_model() is None:
        pytest.skip("the committed manifest has no landmark model")
    analysis, label, group = study_group(committed_registry, aggregation)
    decision = analysis.decision
    assert decision is not None and analysis.reading.cobb is not None
    assert (label.aggregation, label.label, label.score) == (aggregation, decision.label, decision.score)
    if aggregation == "measured":
        assert decision.label == ("Damaged" if analysis.reading.cobb.max_deg >= 40.0 else "Normal")
    (finding,) = group.get_qualitative_evaluations()
    assert finding.value == {"Damaged": codes.SCT.Abnormal, "Normal": codes.SCT.Normal}[label.label]
    (probability,) = group.get_measurements()
    assert probability.value == pytest.approx(label.score, abs=1e-6)
    texts = algorithm_texts(group)
    expected = LANDMARK_MODEL_NAME if aggregation == "measured" else CLASSIFIER_MODEL_NAME
    assert texts["Algorithm Name"] == [expected], texts
    assert f"aggregation={aggregation}" in texts["Algorithm Parameters"], texts


def algorithm_texts(items) -> dict[str, list[str]]:
    """The TEXT items of a content tree by concept name (Algorithm Name, Algorithm Parameters, ...)."""
    found: dict[str, list[str]] = {}
    for item in items:
        if getattr(item, "ValueType", None) == "TEXT":
            found.setdefault(item.ConceptNameCodeSequence[0].CodeMeaning, []).append(str(item.TextValue))
        for name, values in algorithm_texts(getattr(item, "ContentSequence", [])).items():
            found.setdefault(name, []).extend(values)
    return found
