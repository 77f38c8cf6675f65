"""scripts/level_audit.py: which of the labels' and the service's boxes a blind reading sides with."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from spine_service_testlib import load_script


def _script():
    return load_script("level_audit")


def test_a_reading_sides_with_both_either_or_neither() -> None:
    side = _script().side
    assert side(1, 1, 1) == "both"
    assert side(1, 1, 0) == "labels"
    assert side(0, 1, 0) == "service"
    assert side(2, 1, 0) == "neither"
    assert side(-0.5, 0, 0) == "neither"  # a body without a box of its own
    assert side(None, 0, 0) == "neither"  # a reader who named no box


def test_the_nearest_box_is_the_one_whose_centre_is_closest() -> None:
    centres = np.array([[100.0, 50.0], [102.0, 150.0], [105.0, 250.0]])
    assert _script().nearest_box(centres, np.array([101.0, 140.0])) == 1
    assert _script().nearest_box(centres, np.array([0.0, 0.0])) == 0


def test_readings_load_from_reader_files_and_from_the_audit_itself(tmp_path: Path) -> None:
    script = _script()
    reader = {"reader": 0, "films": {"a.jpg": {"t1_box": 1, "l5_box": 17}}}
    (tmp_path / "r0.json").write_text(json.dumps(reader))
    (tmp_path / "audit.json").write_text(json.dumps({"readings": [reader, {**reader, "reader": 1}]}))
    assert script.load_readings([tmp_path / "r0.json"]) == [reader]
    assert [r["reader"] for r in script.load_readings([tmp_path / "r0.json", tmp_path / "audit.json"])] == [0, 0, 1]
