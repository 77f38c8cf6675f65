"""The SR's findings are /classify's: each mask's finding and the study's label at the calibrated cut-off, including a
calibrated score between 0.5 and the cut-off (where a fixed 0.5 would call the mask Abnormal and /classify Normal)."""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path

import highdicom as hd
import pytest
from fastapi.testclient import TestClient
from pydicom.sr.codedict import codes
from spine_dicom_testlib import dx_bytes
from spine_service_testlib import copy_models_dir, make_settings, start_client

from spine_core.manifest import Calibration, Manifest, load_manifest, save_manifest

CALIBRATED, CUTOFF = 0.505, 0.509  # every mask's calibrated p_damaged, and the manifest's decision_threshold
DICOM = "application/dicom"


@pytest.fixture(scope="module")
def client(models_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The tiny models, with a classifier whose calibration maps every raw score to CALIBRATED (slope 0)."""
    folder = copy_models_dir(models_dir, tmp_path_factory.mktemp("calibrated") / "models")
    manifest = load_manifest(folder)
    calibration = Calibration(
        method="platt",
        slope=0.0,
        intercept=math.log(CALIBRATED / (1 - CALIBRATED)),
        logit_clip=1e-7,
        fitted_on="test fixture",
        threshold_rule="test fixture",
        ece_bins=15,
        ece_before=0.0,
        ece_after=0.0,
        nll_before=0.0,
        nll_after=0.0,
    )
    entries = [
        e.model_copy(update={"calibration": calibration, "decision_threshold": CUTOFF}) if e.kind == "classification" else e
        for e in manifest.models
    ]
    save_manifest(Manifest(created=manifest.created, models=entries), folder)
    client = start_client(make_settings(folder))
    yield client
    client.__exit__(None, None, None)


@pytest.mark.parametrize("aggregation", ["mean", "max_score"])
def test_sr_findings_and_label_equal_classify_between_half_and_the_cutoff(client: TestClient, aggregation: str) -> None:
    data = dx_bytes()
    form = {"aggregation": aggregation}
    answer = client.post("/classify", files={"ap": ("xray.dcm", data, DICOM)}, data={"include_masks": "false", **form})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["threshold"] == pytest.approx(CUTOFF)
    scores = {m["structure"]: m["p_damaged"] for m in body["per_mask"]}
    assert len(scores) >= 2 and all(0.5 < p < CUTOFF for p in scores.values()), scores  # the band this test is about
    # /classify's own reading of each mask: the cut-off it reports (a mask alone under the mean rule)
    per_mask_label = {s: "Damaged" if p >= body["threshold"] else "Normal" for s, p in scores.items()}

    response = client.post("/dicom/sr", files={"file": ("xray.dcm", data, DICOM)}, data=form)
    assert response.status_code == 200, response.text
    sr = hd.sr.srread(io.BytesIO(response.content))
    value = {"Damaged": codes.SCT.Abnormal, "Normal": codes.SCT.Normal}

    (study,) = sr.content.get_image_measurement_groups()
    (label,) = study.get_qualitative_evaluations()
    assert label.value == value[body["label"]]
    (probability,) = study.get_measurements()
    assert probability.value == pytest.approx(body["score"], abs=1e-6)

    groups = sr.content.get_planar_roi_measurement_groups()
    assert len(groups) == len(scores)
    for group in groups:
        structure = str(group.tracking_identifier).split(" mask")[0]
        (finding,) = group.get_qualitative_evaluations()
        (measurement,) = group.get_measurements()
        assert measurement.value == pytest.approx(scores[structure], abs=1e-6)
        assert finding.value == value[per_mask_label[structure]], structure  # Normal: 0.505 < 0.509, not >= 0.5
