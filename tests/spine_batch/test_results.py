"""The Parquet parts: whole or absent, one schema after close, readable by pandas as one table."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from spine_batch.results import PART_GLOB, ResultsStore, export_csv, read_results

ERROR = {"path": "a.png", "status": "error", "error_code": "corrupt_image", "error_status": 422, "error_message": "cut"}
OK = {"path": "b.png", "status": "ok", "label": "Normal", "score": 0.9, "warnings": [], "cobb.angles_deg": [1.0, 2.5]}
LATER = {"path": "c.png", "status": "ok", "label": "Damaged", "score": 1, "warnings": ["w"], "decided_by": ["Ap_Vertebra"]}


def test_parts_of_different_columns_are_one_table_after_close(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "out", chunk_rows=1)
    for row in (ERROR, OK, LATER):
        store.add(row)
    store.close()
    parts = sorted((tmp_path / "out").glob(PART_GLOB))
    assert len(parts) == 3
    schemas = {pq.read_schema(p).remove_metadata() for p in parts}
    assert len(schemas) == 1  # rewritten to the union
    table = pq.read_table(tmp_path / "out")  # pyarrow's own reader, schema from one file, sees every column
    assert table.column_names[:7] == ["path", "study", "view", "status", "error_code", "error_status", "error_message"]
    by_path = {row["path"]: row for row in table.to_pylist()}
    assert by_path["b.png"]["cobb.angles_deg"] == [1.0, 2.5] and by_path["a.png"]["cobb.angles_deg"] is None
    assert by_path["c.png"]["score"] == 1.0 and by_path["c.png"]["decided_by"] == ["Ap_Vertebra"]
    assert ResultsStore(tmp_path / "out").done_keys() == {"a.png", "b.png", "c.png"}


def test_a_part_left_half_written_is_ignored_and_cleared(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "out", chunk_rows=10)
    store.add(OK)
    store.flush()
    (tmp_path / "out" / ".tmp-part-x-00000.parquet").write_bytes(b"PAR1 cut short")
    assert read_results(tmp_path / "out").num_rows == 1
    reopened = ResultsStore(tmp_path / "out")
    assert reopened.done_keys() == {"b.png"} and not list((tmp_path / "out").glob(".tmp-*"))


def test_csv_export_has_every_row_with_lists_as_json(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "out", chunk_rows=2)
    for row in (ERROR, OK, LATER):
        store.add(row)
    store.close()
    assert export_csv(tmp_path / "out", tmp_path / "r.csv") == 3
    lines = (tmp_path / "r.csv").read_text().splitlines()
    assert lines[0].startswith("path,study,view,status,error_code")
    assert any('"[1.0,2.5]"' in line for line in lines)


def test_drop_errors_leaves_the_good_rows_and_frees_the_failed_keys(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "out", chunk_rows=1)
    for row in (ERROR, OK, LATER):
        store.add(row)
    store.close()
    again = ResultsStore(tmp_path / "out")
    assert again.drop_errors() == 1
    assert again.done_keys() == {"b.png", "c.png"} and len(again.parts()) == 2
    assert again.drop_errors() == 0


def test_put_in_order_rewrites_the_rows_in_the_source_order_only_when_needed(tmp_path: Path) -> None:
    store = ResultsStore(tmp_path / "out", chunk_rows=2)
    for row in (LATER, ERROR, OK, {"path": "gone.png", "status": "ok"}):  # completion order, and a key the source lost
        store.add(row)
    assert store.put_in_order(["a.png", "b.png", "c.png"]) is True
    store.close()
    assert read_results(tmp_path / "out").column("path").to_pylist() == ["a.png", "b.png", "c.png", "gone.png"]
    assert len(store.parts()) == 2  # chunk_rows per part, the old parts gone
    assert read_results(tmp_path / "out").to_pylist()[2]["decided_by"] == ["Ap_Vertebra"]  # whole rows moved
    again = ResultsStore(tmp_path / "out")
    parts = again.parts()
    assert again.put_in_order(["a.png", "b.png", "c.png"]) is False and again.parts() == parts  # in order: untouched
