"""The results: a folder of Parquet parts (`RESULTS/part-<run>-<n>.parquet`), which pyarrow, pandas, Ray,
DuckDB and Spark read as one table.

Rows are buffered and written as a new part every `chunk_rows` rows or `flush_s` seconds, each part written
to a hidden temporary name and renamed, so a part is either whole or absent: a killed run keeps every part
it finished, and the next run reads their `path` column and skips those images. Parts may differ in their
columns (an early part of error rows only; a field the service added); `close` rewrites the few parts whose
schema is not the union, so readers that take the schema from one file (pyarrow's default) see every column.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from spine_batch.rows import ID_COLUMNS, STATUS_ERROR

PART_GLOB = "part-*.parquet"


class ResultsStore:
    def __init__(self, out: Path, chunk_rows: int = 256, flush_s: float = 30.0) -> None:
        if out.exists() and not out.is_dir():
            raise ValueError(f"{out} exists and is not a results folder (the Parquet results are a folder of parts)")
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(".tmp-*"):  # a part being written when a previous run was killed
            stale.unlink(missing_ok=True)
        self.out, self.chunk_rows, self.flush_s = out, chunk_rows, flush_s
        self.run_id = time.strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self._rows: list[dict[str, Any]] = []
        self._parts = 0
        self._last_flush = time.monotonic()
        self.written = 0

    def parts(self) -> list[Path]:
        return sorted(self.out.glob(PART_GLOB))

    def done_keys(self) -> set[str]:
        """`path` of every row already in the results (reads that one column of each part)."""
        keys: set[str] = set()
        for part in self.parts():
            keys.update(pq.read_table(part, columns=["path"]).column("path").to_pylist())
        return keys

    def drop_errors(self) -> int:
        """Remove the error rows (so a re-run tries those images again); returns how many were removed."""
        import pyarrow.compute as pc

        dropped = 0
        for part in self.parts():
            table = pq.read_table(part)
            keep = pc.fill_null(pc.not_equal(table.column("status"), STATUS_ERROR), True)
            kept = table.filter(keep)
            if kept.num_rows == table.num_rows:
                continue
            dropped += table.num_rows - kept.num_rows
            if kept.num_rows:
                _write_atomic(kept, part)
            else:
                part.unlink()
        return dropped

    def add(self, row: dict[str, Any]) -> None:
        self._rows.append(row)
        if len(self._rows) >= self.chunk_rows or time.monotonic() - self._last_flush >= self.flush_s:
            self.flush()

    def flush(self) -> None:
        self._last_flush = time.monotonic()
        if not self._rows:
            return
        table = _to_table(self._rows)
        name = f"part-{self.run_id}-{self._parts:05d}.parquet"
        _write_atomic(table, self.out / name)
        self._parts += 1
        self.written += len(self._rows)
        self._rows = []

    def close(self) -> None:
        self.flush()
        normalize_parts(self.out)

    def put_in_order(self, keys_in_order: list[str]) -> bool:
        """Rewrite the parts so the table reads in `keys_in_order` (the source's order; rows of other keys last, as
        they were), when it does not already: rows arrive in completion order, and a resumed run appends its own.
        Returns whether a rewrite was needed. New parts are written before the old are removed, so a kill in
        between leaves rows twice (the same row: resuming still skips it), never none."""
        self.flush()
        parts = self.parts()
        keys = [key for part in parts for key in pq.read_table(part, columns=["path"]).column("path").to_pylist()]
        position = {key: i for i, key in enumerate(keys_in_order)}
        rank = [position.get(key, len(position) + i) for i, key in enumerate(keys)]
        if all(a <= b for a, b in itertools.pairwise(rank)):
            return False
        table = read_results(self.out).take(sorted(range(len(rank)), key=rank.__getitem__))
        for n, start in enumerate(range(0, table.num_rows, self.chunk_rows)):
            _write_atomic(table.slice(start, self.chunk_rows), self.out / f"part-{self.run_id}-ordered-{n:05d}.parquet")
        for part in parts:
            part.unlink()
        return True


def _to_table(rows: list[dict[str, Any]]) -> pa.Table:
    # Column by column (pa.Table.from_pylist would take the columns of the first row only).
    columns = list(ID_COLUMNS) + sorted({k for row in rows for k in row} - set(ID_COLUMNS))
    return pa.table({name: [row.get(name) for row in rows] for name in columns})


def _write_atomic(table: pa.Table, path: Path) -> None:
    tmp = path.with_name(f".tmp-{path.name}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def unified_schema(out: Path) -> pa.Schema:
    """The union of every part's columns (types promoted: null -> anything, int -> float)."""
    schemas = [pq.read_schema(part) for part in sorted(out.glob(PART_GLOB))]
    if not schemas:
        return pa.schema([])
    merged = pa.unify_schemas(schemas, promote_options="permissive")
    first = [name for name in ID_COLUMNS if name in merged.names]
    rest = sorted(set(merged.names) - set(first))
    return pa.schema([merged.field(name) for name in first + rest])


def _conform(table: pa.Table, schema: pa.Schema) -> pa.Table:
    arrays = [table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(len(table), f.type) for f in schema]
    return pa.Table.from_arrays(arrays, schema=schema)


def normalize_parts(out: Path) -> int:
    """Rewrite the parts whose schema differs from the union; returns how many were rewritten."""
    schema = unified_schema(out)
    rewritten = 0
    for part in sorted(out.glob(PART_GLOB)):
        if pq.read_schema(part).remove_metadata() != schema:
            _write_atomic(_conform(pq.read_table(part), schema), part)
            rewritten += 1
    return rewritten


def read_results(out: Path) -> pa.Table:
    """Every part as one table (whatever state a killed run left them in)."""
    schema = unified_schema(out)
    return pa.concat_tables([_conform(pq.read_table(p), schema) for p in sorted(out.glob(PART_GLOB))] or [schema.empty_table()])


def _csv_cell(value: Any) -> Any:
    if isinstance(value, list):
        return json.dumps(value, separators=(",", ":"))
    return "" if value is None else value


def export_csv(out: Path, csv_path: Path) -> int:
    """The results as one CSV (lists as JSON text), part by part; returns the rows written."""
    schema = unified_schema(out)
    rows = 0
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(schema.names)
        for part in sorted(out.glob(PART_GLOB)):
            for record in _conform(pq.read_table(part), schema).to_pylist():
                writer.writerow([_csv_cell(record[name]) for name in schema.names])
                rows += 1
    return rows
