"""What spine-batch says and does around the rows: nothing loaded when nothing is left, the DICOM view notice
only when a DICOM named no view, the final table in the source's order."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from spine_batch_testlib import CORRUPT_FILM, GOOD_FILMS

import spine_engine.engine
from spine_batch.cli import main
from spine_batch.results import read_results
from spine_batch.rows import VIEW_FROM_OPTION_FOR_DICOM
from spine_batch.sources import source_items

NOTICE = "DICOM files name no view"


def _run(source: Path, out: Path, models_dir: Path, *extra: str) -> int:
    args = [str(source), "--out", str(out), "--models-dir", str(models_dir), "--providers", "CPUExecutionProvider"]
    return main([*args, "--chunk-rows", "2", "--no-progress", *extra])


def test_rows_in_source_order_the_notice_for_a_dicom_without_view_and_nothing_loaded_when_done(
    films: Path, models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    assert _run(films, out, models_dir, "--workers", "3") == 0
    said = capsys.readouterr().err
    table = read_results(out)
    assert table.column("path").to_pylist() == [item.key for item in source_items(films)]  # not completion order
    assert sorted(table.column("path").to_pylist()) == sorted([*GOOD_FILMS, CORRUPT_FILM])
    view_from = dict(zip(table.column("path").to_pylist(), table.column("view_from").to_pylist(), strict=True))
    assert view_from["series/noext"] == VIEW_FROM_OPTION_FOR_DICOM and view_from["series/lat.dcm"] == "ViewPosition"
    assert view_from["a.png"] == "--view"
    assert f"1 {NOTICE}" in said

    def no_loading(settings: object) -> None:
        raise AssertionError("models loaded with nothing to do")

    monkeypatch.setattr(spine_engine.engine, "load_engine", no_loading)
    assert _run(films, out, models_dir) == 0
    said = capsys.readouterr().err
    assert "nothing to do: all 7 images" in said and " images in " not in said and NOTICE not in said


def test_a_folder_without_dicoms_gets_no_view_notice(
    films: Path, models_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    jpegs = tmp_path / "jpegs"
    jpegs.mkdir()
    shutil.copy(films / "b.jpg", jpegs / "b.jpg")
    shutil.copy(films / "a.png", jpegs / "a.png")
    assert _run(jpegs, tmp_path / "out", models_dir) == 0
    said = capsys.readouterr().err
    assert "2 images in" in said and NOTICE not in said
