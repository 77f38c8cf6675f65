"""Markdown tables from the suite's JSON (printed by `run`, and by `python -m benchmarks report results.json`).

Here: the run header, the targets, the HTTP and GPU sections and `render`; the sections timed in process are
in benchmarks.report_in_process.
"""

from __future__ import annotations

from typing import Any

from benchmarks.report_in_process import efficiency_table, models_table, pipeline_tables, tuning_tables
from benchmarks.report_markdown import format_value, markdown_table, median_p90


def _la(values: Any) -> str:
    return " / ".join(f"{v:.2f}" for v in values) if values else "?"


def _busy(busy: list[dict[str, Any]]) -> str:
    return "none" if not busy else "; ".join(f"`{b['cmd']}` ({b['cpu_percent']:.0f}%)" for b in busy)


def machine(results: dict[str, Any]) -> str:
    m = results["machine"]
    busy = results.get("busy_processes_at_start") or []
    lines = [
        f"- **Machine**: {m['cpu']}, {m['cpu_threads_usable']} usable CPU threads, {m.get('memory_gib')} GiB, "
        f"SIMD {', '.join(m.get('simd') or []) or '?'}; {m['platform']}",
        f"- **Software**: Python {m['python']}, onnxruntime {m['onnxruntime']} "
        f"(providers in this build: {', '.join(m['onnxruntime_available_providers'])}), numpy {m['numpy']}",
        f"- **Date**: {results['started_utc']} – {results.get('finished_utc', '?')} "
        f"({results.get('duration_s', 0) / 60:.1f} min), mode {results['mode']}",
        f"- **Command**: `{results['command']}`"
        + (f" at commit `{results['git']['commit'][:10]}`" if results.get("git", {}).get("commit") else "")
        + (" (with uncommitted changes)" if results.get("git", {}).get("uncommitted_changes_in_service_or_benchmarks") else ""),
        f"- **Models**: `{results['models_dir']}` (manifest created {results['manifest_created']}): "
        f"{', '.join(results['models_in_manifest'])}",
        "- **Other CPU load at start**: " + _busy(busy),
        "- **Other CPU load at end**: " + _busy(results.get("busy_processes_at_end") or []),
        f"- **Load average** (1/5/15 min) at start {_la(results.get('load_average_at_start'))}, "
        f"at end {_la(results.get('load_average_at_end'))}",
    ]
    fl = results.get("foreign_cpu_during_run")
    if fl and fl.get("samples"):
        lines.append(
            f"- **Other processes during the run** (sampled every {fl['interval_s']:.0f} s): "
            f"mean {fl['mean_cpu_percent']:.0f}% CPU, "
            f"max {fl['max_cpu_percent']:.0f}%, over 20% in {100 * fl['fraction_of_samples_over_20_percent']:.0f}% of samples"
            + (
                "; busiest: " + "; ".join(f"`{t['cmd']}` ({t['max_cpu_percent']:.0f}%)" for t in fl["top"][:3])
                if fl["top"]
                else ""
            )
        )
    for k, v in (results.get("skipped") or {}).items():
        lines.append(f"- **Skipped ({k})**: {v}")
    return "\n".join(lines)


def http_tables(results: dict[str, Any]) -> str:
    h = results["sections"].get("http")
    if not h:
        return "(not run)"
    parts = [f"Images: {h['images']}" + (f" — **{h['message']}**" if h.get("message") else ""), ""]
    rows = []
    for name, v in h["variants"].items():
        rows.append(
            [
                name,
                v.get("code", ""),
                ", ".join(f"{k}={x}" for k, x in v["env"].items()) or "defaults",
                f"{v['time_to_ready_s']:.2f}",
                f"{v['rss_after_ready_mib']:.0f}",
                v["execution_provider"],
                _precisions(v.get("precision_served")),
            ]
        )
    header = ["server variant", "code", "settings", "time to ready (s)", "RSS when ready (MiB)", "provider"]
    header.append("precision (GET /models)")
    parts += [markdown_table(header, rows), ""]
    rows = []
    for name, v in h["variants"].items():
        for scenario, by_c in v["scenarios"].items():
            for c, r in by_c.items():
                lat = r["latency"]
                rows.append(
                    [
                        name,
                        scenario,
                        c,
                        str(r["requests"]),
                        f"{lat['median_ms']:.0f}",
                        f"{lat['p95_ms']:.0f}",
                        f"{lat['p99_ms']:.0f}",
                        f"{r['requests_per_s']:.2f}",
                        str(r["errors"]),
                        f"{r['peak_rss_mib']:.0f}",
                        format_value(r["server_cpu_s_per_request"], 2),
                        format_value(r.get("client_cpu_s_per_request"), 3),
                    ]
                )
    parts.append(
        markdown_table(
            [
                "variant",
                "endpoint",
                "concurrency",
                "requests",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "req/s",
                "errors",
                "peak RSS MiB",
                "server CPU s/req",
                "client CPU s/req",
            ],
            rows,
        )
    )
    stage_rows = []
    for name, v in h["variants"].items():
        for scenario, by_c in v["scenarios"].items():
            r = by_c.get("1")
            if r and r["server_timings_ms_mean"]:
                stage_rows.append([name, scenario, *[f"{r['server_timings_ms_mean'].get(k, 0):.0f}" for k in STAGES]])
    if stage_rows:
        parts += ["", "Server-side stages at concurrency 1 (mean ms, from the responses' `timings_ms`):", ""]
        parts.append(markdown_table(["variant", "endpoint", *STAGES], stage_rows))
    return "\n".join(parts)


def _precisions(served: dict[str, str | None] | None) -> str:
    if not served:
        return "–"
    counts: dict[str, int] = {}
    for v in served.values():
        counts[v or "not reported"] = counts.get(v or "not reported", 0) + 1
    return ", ".join(f"{k}: {n}" for k, n in sorted(counts.items()))


STAGES = ["decode", "preprocess", "inference", "postprocess", "classification", "encode", "total"]


def gpu_text(results: dict[str, Any]) -> str:
    g = results["sections"].get("gpu")
    if not g:
        return "(not run)"
    if g["status"] != "ok":
        return f"**No GPU figures**: {g['status']} — {g.get('reason')}"
    rows = []
    for m in g["models"]:
        for b, s in m["batches"].items():
            rows.append(
                [
                    m["name"],
                    b,
                    median_p90(s["numpy_in_out"]),
                    median_p90(s["iobinding_on_device"]),
                    f"{m['first_run_ms_exhaustive']:.0f}",
                    f"{m['first_run_ms_heuristic']:.0f}",
                ]
            )
    head = f"Device: {g.get('device')}; provider {g['provider']} (read back from every session).\n\n"
    return head + markdown_table(
        ["model", "batch", "numpy in/out ms", "IOBinding on device ms", "session+first run ms (cuDNN exhaustive)", "(heuristic)"],
        rows,
    )


def _by_batch(target: dict[str, Any]) -> str:
    """'; batch 1 met (lowest X 3.1×), batch 8 missed (...)' — absent in JSON written before it existed."""
    parts = [
        f"batch {b} {'met' if v['met'] else 'missed'} (lowest {v['worst_model']} {v['worst_ratio']:.1f}×)"
        for b, v in (target.get("by_batch") or {}).items()
    ]
    return "; " + ", ".join(parts) if parts else ""


def targets_text(results: dict[str, Any]) -> str:
    t = results.get("targets") or {}
    lines = []
    if "ort_3x_keras_predict" in t:
        x = t["ort_3x_keras_predict"]
        line = (
            f"- ORT ≥ 3× Keras predict per model: fp32 **{'met' if x['met'] else 'missed'}** "
            f"(lowest: {x['worst_model']} {x['worst_ratio']:.1f}×{_by_batch(x)})"
        )
        y = t.get("ort_int8_3x_keras_predict")
        if y:
            n = len(y["per_model_min_over_batches"])
            without = y["models_without_int8"]
            line += (
                f"; int8 variants ({n} of {n + len(without)} models) **{'met' if y['met'] else 'missed'}** "
                f"(lowest: {y['worst_model']} {y['worst_ratio']:.1f}×{_by_batch(y)})"
                + (f"; no int8 variant (fp32 under SPINE_PRECISION=int8): {', '.join(without)}" if without else "")
            )
        lines.append(line)
    if "unets_half_of_matmul_peak" in t:
        x = t["unets_half_of_matmul_peak"]
        lines.append(
            f"- U-Nets ≥ 50% of the matmul peak (fp32): **{'met' if x['met'] else 'missed'}** "
            f"(lowest best-batch figure: {x['worst_model']} {100 * x['worst_fraction']:.0f}% of {x['peak_gflops']:.0f} GFLOP/s)"
        )
    if "classify_ap_lat_under_1s" in t:
        x = t["classify_ap_lat_under_1s"]
        lines.append(
            f"- One AP+LAT /classify < 1 s end-to-end: **{'met' if x['met'] else 'missed'}** "
            f"(p50 {x['median_ms']:.0f} ms, p95 {x['p95_ms']:.0f} ms, variant {x['variant']!r})"
        )
    return "\n".join(lines) or "(no targets measured)"


def render(results: dict[str, Any]) -> str:
    return "\n\n".join(
        [
            "## Run",
            machine(results),
            "## Targets (2-core CPU)",
            targets_text(results),
            "## 1. Per model: Keras predict vs Keras tf.function vs onnxruntime",
            models_table(results),
            "## 2. Efficiency: FLOPs and the matmul peak",
            efficiency_table(results),
            "## onnxruntime levers",
            tuning_tables(results),
            "## Pipeline before/after (in process)",
            pipeline_tables(results),
            "## 3. End-to-end HTTP",
            http_tables(results),
            "## 4. GPU",
            gpu_text(results),
        ]
    )
