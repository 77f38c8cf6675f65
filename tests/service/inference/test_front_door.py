"""`analyze_study(engine, request)` without HTTP: the decision, the refusals, the measurement wiring."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from spine_service_testlib import CPU, copy_models_dir, encode, make_dicom, spine_image

import spine_engine.analysis
from spine_core.manifest import Manifest, load_manifest, save_manifest
from spine_core.structures import STRUCTURES
from spine_engine import ModelRegistry, answers
from spine_engine.engine import Engine
from spine_engine.errors import NotARadiographError, NoValidatedModelError, UnknownStructureError, UnknownViewError
from spine_engine.measurement import Measurement
from spine_engine.policy import AnalysisPolicy
from spine_engine.study import Film, StudyRequest, analyze_study

FILM = encode(spine_image())


@pytest.fixture(scope="module")
def engine(registry: ModelRegistry) -> Engine:
    return Engine(registry)


@pytest.fixture(scope="module")
def lat_demo_engine(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Engine:
    """The tiny models with every LAT U-Net a demonstration, as the committed ones are."""
    folder = copy_models_dir(models_dir, tmp_path_factory.mktemp("lat_demo") / "models")
    manifest = load_manifest(folder)
    entries = [e.model_copy(update={"validated": e.view != "LAT"}) for e in manifest.models]
    save_manifest(Manifest(created=manifest.created, models=entries), folder)
    return Engine(ModelRegistry.load(folder, providers=CPU, intra_op_threads=1))


def request(*films: Film, **kw: object) -> StudyRequest:
    return StudyRequest(films=films, policy=kw.pop("policy", AnalysisPolicy()), **kw)  # type: ignore[arg-type]


def test_the_label_is_the_decision_rules_reading_of_the_calibrated_scores(engine: Engine) -> None:
    study = analyze_study(engine, request(Film(FILM, "a.png", "ap")))
    rules, decision = engine.rules, study.decision
    assert decision is not None and list(study.views) == ["AP"]
    assert study.per_mask == {s: pytest.approx(rules.calibrate(raw[1])) for s, raw in study.per_mask_raw.items()}
    assert decision.p_damaged == pytest.approx(np.mean([study.per_mask[s] for s in decision.decided_by]))
    assert decision.label == rules.finding(decision.p_damaged) and decision.threshold == rules.threshold
    assert set(decision.rules) >= {"mean", "max_score"} and decision.rule == "mean"
    body = answers.classify_response(engine, study, include_masks=False)  # the /classify body reads the same object
    assert (body.label, body.threshold) == (decision.label, pytest.approx(rules.threshold, abs=1e-6))


def test_masks_only_requests_decide_nothing(engine: Engine) -> None:
    study = analyze_study(engine, request(Film(FILM, "a.png", "AP"), classify=False))
    assert study.decision is None and study.per_mask == {} and study.views["AP"].result.masks


def test_the_view_comes_from_the_sender_then_the_dicom_then_the_default(engine: Engine) -> None:
    dicom_lat = make_dicom(spine_image(), view="LL")
    assert list(analyze_study(engine, request(Film(dicom_lat, "x.dcm"), classify=False)).views) == ["LAT"]
    as_sent = analyze_study(engine, request(Film(dicom_lat, "x.dcm", "AP"), classify=False))
    assert list(as_sent.views) == ["AP"] and "ViewPosition says LAT" in as_sent.warnings[0]
    assert list(analyze_study(engine, request(Film(FILM, "a.png"), classify=False, default_view="AP")).views) == ["AP"]
    with pytest.raises(UnknownViewError, match="view is required"):
        analyze_study(engine, request(Film(FILM, "a.png"), classify=False))
    with pytest.raises(UnknownViewError, match="unknown view 'oblique'"):
        analyze_study(engine, request(Film(FILM, "a.png", "oblique")))


def test_a_structure_of_a_view_not_sent_is_refused_before_decoding(engine: Engine) -> None:
    with pytest.raises(UnknownStructureError, match="structure 'Lat_Vertebra' belongs to view LAT, which was not sent"):
        analyze_study(engine, request(Film(b"not an image", "a.png", "AP"), structures=("Lat_Vertebra",)))
    with pytest.raises(UnknownStructureError, match="unknown structure 'Ap_Rib'"):
        analyze_study(engine, request(Film(b"not an image", "a.png", "AP"), structures=("Ap_Rib",)))


@pytest.mark.parametrize("classify", [True, False])
def test_a_ct_is_not_a_radiograph_whatever_the_request(engine: Engine, classify: bool) -> None:
    dataset = pydicom.dcmread(io.BytesIO(make_dicom(spine_image(), view="AP")))
    dataset.Modality = "CT"
    buffer = io.BytesIO()
    dataset.save_as(buffer, enforce_file_format=True)
    ct = buffer.getvalue()
    with pytest.raises(NotARadiographError, match="modality CT") as refused:
        analyze_study(engine, request(Film(ct, "ct.dcm", "AP"), classify=classify))
    assert refused.value.code == "not_a_radiograph" and refused.value.status_code == 422


def test_a_lat_only_study_is_refused_with_advice_that_works(lat_demo_engine: Engine) -> None:
    lat = Film(FILM, "lat.png", "LAT")
    with pytest.raises(NoValidatedModelError, match="send an AP film") as refused:
        analyze_study(lat_demo_engine, request(lat))
    assert "/segment" in refused.value.message
    # The advice: /segment with the demonstration model named gives its mask (no label) ...
    masks = analyze_study(lat_demo_engine, request(lat, classify=False, structures=("Lat_Vertebra",)))
    assert list(masks.views["LAT"].result.masks) == ["Lat_Vertebra"] and masks.decision is None
    # ... while naming it for a label is refused, since a demonstration score never decides by default.
    with pytest.raises(NoValidatedModelError, match="only demonstration models ran"):
        analyze_study(lat_demo_engine, request(lat, structures=("Lat_Vertebra",)))
    assert {s for s, v in STRUCTURES.items() if v == "LAT"} <= lat_demo_engine.rules.demonstration


def test_the_measurement_is_read_through_measure_spine(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, int]] = []
    real = spine_engine.analysis.measure_spine

    def spy(pixels: np.ndarray, vertebra_mask: np.ndarray, landmarks=None) -> Measurement:
        seen.append(vertebra_mask.shape)
        return real(pixels, vertebra_mask, landmarks)

    monkeypatch.setattr(spine_engine.analysis, "measure_spine", spy)
    study = analyze_study(engine, request(Film(FILM, "a.png", "AP")))
    reading = study.views["AP"].reading
    assert seen == [spine_image().shape]  # once, on the vertebra mask at the film's size
    assert reading.vertebrae is not None and reading.gate is not None and reading.gate.ok
