"""The SR's Cobb extension point: a hand-made `cobb` dict (the API's `CobbOut` shape) encoded as TID 1500 measurements."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import highdicom as hd
import pytest
from pydicom.sr.codedict import codes
from spine_dicom_testlib import dciodvfy, dx_bytes

from service.dicom.analysis import analyze_radiograph, study_label
from service.dicom.seg import build_segmentation
from service.dicom.source import read_dataset
from service.dicom.sr import build_measurement_report, vertebra_code
from spine_engine import ModelRegistry
from spine_engine.engine import Engine

COBB = {
    "angles_deg": [12.5, 42.1, 20.0],
    "max_deg": 42.1,
    "curve": "S",
    "curves": [
        {"name": "main_thoracic", "upper_end": "T5", "lower_end": "T12", "apex": "T9", "angle_deg": 42.1},
        {"name": "thoracolumbar", "upper_end": "T12", "lower_end": "L4", "apex": "L1", "angle_deg": 20.0},
    ],
    "severity": "moderate",
}


def report_bytes(registry: ModelRegistry, cobb: dict | None) -> tuple[bytes, str]:
    data = dx_bytes()
    analysis = analyze_radiograph(Engine(registry), read_dataset(data), data)
    sr = build_measurement_report([analysis], [build_segmentation(analysis)], study_label([analysis]), cobb=cobb)
    buf = io.BytesIO()
    sr.save_as(buf)
    return buf.getvalue(), analysis.sop_instance_uid


def cobb_groups(sr: hd.sr.ComprehensiveSR) -> list:
    return [
        g for g in sr.content.get_image_measurement_groups() if any(m.name == codes.SCT.CobbAngle for m in g.get_measurements())
    ]


def test_cobb_angles_and_end_vertebrae_are_measurements_on_the_ap_image(registry: ModelRegistry):
    data, source_uid = report_bytes(registry, COBB)
    sr = hd.sr.srread(io.BytesIO(data))
    groups = cobb_groups(sr)
    assert len(groups) == 3  # two curves and the largest angle
    by_angle = {}
    for group in groups:
        (angle,) = group.get_measurements()
        assert angle.unit == codes.UCUM.Degree
        assert [r.referenced_sop_instance_uid for r in group.source_images] == [source_uid]
        by_angle.setdefault(angle.value, []).append((angle, group))
    main = next(a for a, _g in by_angle[42.1] if a.derivation is None)
    assert [site.value for site in main.finding_sites] == [codes.SCT.T5Vertebra, codes.SCT.T12Vertebra, codes.SCT.T9Vertebra]
    (lumbar, _group) = by_angle[20.0][0]
    assert [site.value for site in lumbar.finding_sites] == [codes.SCT.T12Vertebra, codes.SCT.L4Vertebra, codes.SCT.L1Vertebra]
    largest, group = next((a, g) for a, g in by_angle[42.1] if a.derivation is not None)
    assert largest.derivation == codes.SCT.Maximum
    (severity,) = group.get_qualitative_evaluations()
    assert (severity.name, severity.value) == (codes.SCT.Severity, codes.SCT.Moderate)


def test_without_cobb_there_is_no_cobb_measurement(registry: ModelRegistry):
    data, _uid = report_bytes(registry, None)
    assert cobb_groups(hd.sr.srread(io.BytesIO(data))) == []


def test_a_level_the_code_tables_lack_gets_no_invented_code():
    assert vertebra_code("T9") == codes.SCT.T9Vertebra
    assert vertebra_code("S1") is None and vertebra_code("") is None


def test_dciodvfy_finds_no_error_in_an_sr_with_cobb_angles(registry: ModelRegistry, tmp_path: Path):
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed; .ci/run installs it")
    data, _uid = report_bytes(registry, COBB)
    errors, _warnings = dciodvfy(data, tmp_path)
    assert errors == []
