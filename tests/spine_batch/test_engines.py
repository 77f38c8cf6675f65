"""spine-batch end to end, the same tests for both engines: rows equal the service's, a corrupt film is an
error row, a re-run resumes. Ray runs on this machine (2 CPUs, no dashboard), started once for the module."""

from __future__ import annotations

import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from spine_batch_testlib import CORRUPT_FILM, GOOD_FILMS
from spine_service_testlib import encode, spine_image

import spine_batch.local_engine
from spine_batch.cli import main
from spine_batch.results import PART_GLOB, read_results
from spine_batch.rows import RowOptions, classify_item
from spine_batch.sources import source_items
from spine_engine.engine import Engine


@pytest.fixture(scope="module")
def ray_local() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(params=["local", "ray"])
def engine(request: pytest.FixtureRequest) -> str:
    if request.param == "ray":
        request.getfixturevalue("ray_local")
    return request.param


def _run(source: Path, out: Path, models_dir: Path, engine: str, *extra: str) -> int:
    args = [str(source), "--out", str(out), "--view", "AP", "--models-dir", str(models_dir)]
    args += ["--providers", "CPUExecutionProvider", "--engine", engine, "--chunk-rows", "2", *extra]
    return main(args)


def _rows_by_path(out: Path) -> dict[str, dict]:
    rows = read_results(out).to_pylist()
    by_path = {row["path"]: row for row in rows}
    assert len(by_path) == len(rows), "a film appears twice"
    return by_path


def _this_host(engine: str) -> str:
    """Who makes the rows: this machine's name (local), this node's address as Ray knows it (ray, one node)."""
    if engine == "ray":
        import ray.util

        return ray.util.get_node_ip_address()
    return socket.gethostname()


def _set(row: dict) -> dict:
    """A row's non-null cells (columns a later film added are null in earlier rows)."""
    return {k: v for k, v in row.items() if v is not None}


def test_rows_equal_the_service_s_and_a_rerun_resumes(
    engine: str, films: Path, models_dir: Path, loaded_engine: Engine, tmp_path: Path
) -> None:
    source = tmp_path / "films"
    shutil.copytree(films, source)
    out = tmp_path / "results.parquet"
    assert _run(source, out, models_dir, engine, "--csv", str(tmp_path / "results.csv")) == 0

    rows = _rows_by_path(out)
    assert sorted(rows) == sorted([*GOOD_FILMS, CORRUPT_FILM])
    options = RowOptions(default_view="AP")
    for item in source_items(source):
        expected = classify_item(loaded_engine, item, options)
        assert {k: rows[item.key][k] for k in expected} == expected, item.key
    assert rows[CORRUPT_FILM]["error_code"] == "corrupt_image" and rows[CORRUPT_FILM]["label"] is None
    assert {row["host"] for row in rows.values()} == {_this_host(engine)}
    assert rows["series/lat.dcm"]["view"] == "LAT" and rows["a.png"]["view"] == "AP"
    assert len((tmp_path / "results.csv").read_text().splitlines()) == 1 + len(rows)

    parts = sorted(out.glob(PART_GLOB))
    assert _run(source, out, models_dir, engine) == 0  # nothing left to do: no new part
    assert sorted(out.glob(PART_GLOB)) == parts

    (source / "series/new.png").write_bytes(encode(spine_image(seed=11)))
    assert _run(source, out, models_dir, engine) == 0  # only the new film, then every row in the folder's order
    assert read_results(out).column("path").to_pylist() == [item.key for item in source_items(source)]
    rows = _rows_by_path(out)
    assert len(rows) == len(GOOD_FILMS) + 2 and rows["series/new.png"]["status"] == "ok"


def test_an_interrupted_run_keeps_its_finished_parts_and_the_next_one_completes(
    films: Path, models_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0
    real = spine_batch.local_engine.classify_item

    def interrupted_on_the_fifth(*args: object, **kwargs: object) -> dict:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(spine_batch.local_engine, "classify_item", interrupted_on_the_fifth)
    out = tmp_path / "results.parquet"
    assert _run(films, out, models_dir, "local", "--workers", "1") == 130
    kept = _rows_by_path(out)
    assert 2 <= len(kept) <= 4  # parts of 2 rows, plus what was buffered when the interrupt came

    monkeypatch.setattr(spine_batch.local_engine, "classify_item", real)
    assert _run(films, out, models_dir, "local") == 0
    rows = _rows_by_path(out)
    assert sorted(rows) == sorted([*GOOD_FILMS, CORRUPT_FILM])
    for key, row in kept.items():  # not redone
        assert _set(rows[key]) == _set(row)


def test_a_manifest_and_bad_arguments(films: Path, models_dir: Path, tmp_path: Path) -> None:
    manifest = films / "manifest.csv"
    manifest.write_text("path,view,study\na.png,LAT,s1\nseries/lat.dcm,,s1\nmissing.png,AP,s2\n")
    try:
        out = tmp_path / "m.parquet"
        assert _run(manifest, out, models_dir, "local") == 0
        rows = _rows_by_path(out)
        assert rows["a.png"]["view"] == "LAT" and rows["a.png"]["study"] == "s1"
        assert rows["series/lat.dcm"]["view"] == "LAT"
        assert rows["missing.png"]["error_code"] == "read_error"
        (films / "missing.png").write_bytes((films / "a.png").read_bytes())  # the failed film appears
        assert _run(manifest, out, models_dir, "local", "--retry-errors") == 0
        retried = _rows_by_path(out)
        assert retried["missing.png"]["status"] == "ok" and _set(retried["a.png"]) == _set(rows["a.png"])
    finally:
        manifest.unlink()
        (films / "missing.png").unlink(missing_ok=True)
    assert _run(tmp_path / "nowhere", tmp_path / "x.parquet", models_dir, "local") == 2
    (tmp_path / "file.parquet").write_text("")
    assert _run(films, tmp_path / "file.parquet", models_dir, "local") == 2
