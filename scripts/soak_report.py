"""The report of scripts/soak.py: lost and failed requests, latency percentiles per window and per kind, the
server's RSS growth (as a JSON-able dict), and its printed table."""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent) not in sys.path:  # the sibling soak_* modules, however this one is loaded
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from soak_load import Run


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def _latency(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "p50_ms": round(_pct(ms, 50), 1),
        "p90_ms": round(_pct(ms, 90), 1),
        "p99_ms": round(_pct(ms, 99), 1),
        "max_ms": round(max(ms), 1) if ms else float("nan"),
        "mean_ms": round(statistics.fmean(ms), 1) if ms else float("nan"),
    }


def rss_at(rss: list[tuple[int, int]], n: int) -> int:
    """The RSS sample taken at (or first after) `n` completed requests."""
    return next((value for count, value in rss if count >= n), rss[-1][1])


def report(run: Run, args: argparse.Namespace, wall: float, server_counted: float, models: str) -> dict[str, Any]:
    results = sorted(run.results, key=lambda r: r.finished_at)
    failed = [r for r in results if not r.ok]
    lost = args.requests - len(results)
    windows = []
    size = max(1, args.window)
    for start in range(0, len(results), size):
        chunk = results[start : start + size]
        span = chunk[-1].finished_at - (results[start - 1].finished_at if start else 0.0)
        windows.append(
            {
                "requests": f"{start + 1}-{start + len(chunk)}",
                **_latency([r.seconds for r in chunk]),
                "req_per_s": round(len(chunk) / span, 1) if span > 0 else None,
                "failed": sum(not r.ok for r in chunk),
                "rss_mib": round(rss_at(run.rss, start + len(chunk)) / 2**20, 1),
            }
        )
    by_kind: dict[str, list[float]] = defaultdict(list)
    for r in results:
        by_kind[r.kind].append(r.seconds)
    baseline_at = min(args.rss_baseline, len(results))
    rss_base, rss_end = rss_at(run.rss, baseline_at), run.rss[-1][1]
    growth = (rss_end - rss_base) / rss_base * 100
    return {
        "models": models,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "answered": len(results),
        "lost": lost,
        "failed": len(failed),
        "shed_503": sum(r.shed for r in results),
        "failures": [
            {"index": r.index, "kind": r.kind, "status": r.status, "expected": r.expected, "error": r.error} for r in failed[:20]
        ],
        "statuses": dict(sorted(Counter(str(r.status) for r in results).items())),
        "server_counted_requests": int(server_counted),
        "wall_s": round(wall, 1),
        "req_per_s": round(len(results) / wall, 1),
        "latency_all": _latency([r.seconds for r in results]),
        "latency_by_kind": {k: {"n": len(v), **_latency(v)} for k, v in sorted(by_kind.items())},
        "windows": windows,
        "rss": {
            "baseline_at_request": baseline_at,
            "baseline_mib": round(rss_base / 2**20, 1),
            "end_mib": round(rss_end / 2**20, 1),
            "peak_mib": round(max(v for _, v in run.rss) / 2**20, 1),
            "growth_pct": round(growth, 2),
            "max_growth_pct": args.max_rss_growth,
            "samples": [(n, round(v / 2**20, 1)) for n, v in run.rss],
        },
    }


def print_report(rep: dict[str, Any]) -> None:
    print(f"\nsoak: {rep['requests']} requests at concurrency {rep['concurrency']} on {rep['models']}")
    print(
        f"  answered {rep['answered']}, lost {rep['lost']}, failed {rep['failed']}, shed (503 overloaded) "
        f"{rep['shed_503']}; statuses {rep['statuses']}"
    )
    print(f"  server counted {rep['server_counted_requests']} requests; {rep['wall_s']} s, {rep['req_per_s']} req/s")
    rss = rep["rss"]
    print(
        f"  RSS {rss['baseline_mib']} MiB at request {rss['baseline_at_request']} -> {rss['end_mib']} MiB at the end "
        f"({rss['growth_pct']:+.2f} %, limit {rss['max_growth_pct']} %), peak {rss['peak_mib']} MiB"
    )
    print(f"  latency all: {rep['latency_all']}")
    print("\n  window          p50 ms   p90 ms   p99 ms   max ms   req/s  failed  RSS MiB")
    for w in rep["windows"]:
        print(
            f"  {w['requests']:<14} {w['p50_ms']:>7} {w['p90_ms']:>8} {w['p99_ms']:>8} {w['max_ms']:>8} "
            f"{w['req_per_s']!s:>7} {w['failed']:>7} {w['rss_mib']:>8}"
        )
    print("\n  kind                       n   p50 ms   p90 ms   p99 ms   max ms")
    for kind, v in rep["latency_by_kind"].items():
        print(f"  {kind:<22} {v['n']:>5} {v['p50_ms']:>8} {v['p90_ms']:>8} {v['p99_ms']:>8} {v['max_ms']:>8}")
    for f in rep["failures"]:
        print(f"  FAILED #{f['index']} {f['kind']}: {f['status']} (expected {f['expected']}) {f['error']}")
