"""Markdown cells and tables shared by the report's sections (benchmarks.report, benchmarks.report_in_process)."""

from __future__ import annotations

from typing import Any


def format_value(v: Any, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(format_value(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(lines)


def median_p90(stats: dict[str, Any] | None) -> str:
    if not stats or "median_ms" not in stats:
        return "–"
    return f"{stats['median_ms']:,.1f} / {stats['p90_ms']:,.1f}"
