"""scripts/centreline_sheets.py: rows to read on the film alone, and the readers' answers written into the marks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from spine_service_testlib import load_script

ROOT = Path(__file__).resolve().parents[2]
MARKS = ROOT / "docs" / "fov" / "large_film_marks.json"
FILM = ROOT / "docs" / "examples" / "synthetic_ap.jpg"


def _script():
    return load_script("centreline_sheets")


def _film() -> dict:
    return {"t1_top": [200, 100], "l5_bottom": [260, 1100], "centreline": [[210, 500], [250, 900]]}


def test_rows_lie_evenly_between_the_marked_ends() -> None:
    assert _script().reading_rows(_film(), 4) == [300, 500, 700, 900]


def test_the_marks_file_keeps_its_layout() -> None:
    text = MARKS.read_text()
    assert _script().marks_json(json.loads(text)) + "\n" == text


def test_readings_become_the_centreline_and_the_first_pass_is_kept() -> None:
    sheets = _script()
    marks = {"films": {"a.jpg": _film(), "b.jpg": _film()}}
    first = {"reader": 0, "films": {"a.jpg": {f"R{k + 1}": [220 + k, "high"] for k in range(4)}}}
    second = {
        "reader": 1,
        "films": {"a.jpg": {f"R{k + 1}": [240 + k, "low"] for k in range(4)}},
        "notes": {"a.jpg": "faint lumbar bodies"},
    }
    spread = sheets.apply_readings(marks, [first, second])
    film = marks["films"]["a.jpg"]
    assert film["centreline"] == [[230, 300], [231, 500], [232, 700], [233, 900]]  # the readers' mean
    assert film["centreline_first_pass"] == [[210, 500], [250, 900]]
    assert film["centreline_reading"]["reader 1"]["confidence"] == ["low"] * 4
    assert film["centreline_reading"]["reader 1"]["note"] == "faint lumbar bodies"
    assert spread == {"a.jpg": pytest.approx([20.0] * 4)}
    assert marks["films"]["b.jpg"] == _film()  # not read: unchanged
    sheets.apply_readings(marks, [first])  # read again: the first pass stays the first
    assert film["centreline_first_pass"] == [[210, 500], [250, 900]]
    assert film["centreline"][0] == [220, 300]
    film["t1_top"] = [200, 0]  # T1 moved since the sheets were drawn: their rows still say where the readers read
    sheets.apply_readings(marks, [first], {"a.jpg": [300, 500, 700, 900]})
    assert [y for _, y in film["centreline"]] == [300, 500, 700, 900]


def test_sheets_show_the_rows_in_two_halves(tmp_path: Path) -> None:
    sheets = _script()
    with Image.open(FILM) as image:
        width, height = image.size
    film = {"t1_top": [width // 2, height // 10], "l5_bottom": [width // 2, height * 9 // 10], "centreline": []}
    sheets.write_sheets(FILM, film, tmp_path, 9)
    rows = json.loads((tmp_path / f"{FILM.stem}_rows.json").read_text())
    assert rows["width"] == width and list(rows["rows"]) == [f"R{k}" for k in range(1, 10)]
    for half in ("upper", "lower"):
        with Image.open(tmp_path / f"{FILM.stem}_{half}.png") as sheet:
            assert sheet.height == sheets.SHEET_ROWS_PX + 80  # the film's rows and the tick margins
