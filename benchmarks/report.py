"""Markdown tables from the suite's JSON (printed by `run`, and by `python -m benchmarks report results.json`)."""

from __future__ import annotations

from typing import Any


def _f(v: Any, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return str(v)


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(_f(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _ms(stats: dict[str, Any] | None) -> str:
    if not stats or "median_ms" not in stats:
        return "–"
    return f"{stats['median_ms']:,.1f} / {stats['p90_ms']:,.1f}"


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


def _threads(row: dict[str, Any], key: str = "ort_best") -> str:
    return "1 thread" if str(row.get(key, "")).endswith("_1thread") else "all cores"


def _int8_cells(m: dict[str, Any], row: dict[str, Any]) -> list[str]:
    """int8 ms at its better thread setting, int8 vs predict, int8 vs fp32 (each at its better setting)."""
    if "int8" not in m:
        return ["not measured", "–", "–"]  # results from before the int8 runners
    if row.get("speedup_int8_vs_fp32") is None:
        return ["no int8 variant" if not m["int8"].get("available") else "–", "–", "–"]
    best = row[row["ort_int8_best"]]
    vs_predict = row.get("speedup_ort_int8_vs_keras_predict")
    return [
        f"{_ms(best)} ({_threads(row, 'ort_int8_best')})",
        f"**{vs_predict:.1f}×**" if vs_predict else "–",
        f"{row['speedup_int8_vs_fp32']:.2f}× (1 thread {row['speedup_int8_vs_fp32_1thread']:.2f}×, "
        f"all cores {row['speedup_int8_vs_fp32_all_cores']:.2f}×)",
    ]


def models_table(results: dict[str, Any]) -> str:
    rows = []
    any_int8 = False
    models = results["sections"].get("models") or []
    if not models:
        return "(not run)"
    for m in models:
        weights = m.get("keras", {}).get("weights", "–")
        any_int8 |= bool((m.get("int8") or {}).get("available"))
        for b, row in m["batches"].items():
            rows.append(
                [
                    m["name"],
                    b,
                    _ms(row.get("keras_predict")),
                    _ms(row.get("keras_tf_function")),
                    _ms(row.get("onnxruntime")),
                    _ms(row.get("onnxruntime_1thread")),
                    f"**{row['speedup_ort_vs_keras_predict']:.1f}×** ({_threads(row)})"
                    if "speedup_ort_vs_keras_predict" in row
                    else "–",
                    f"{row['speedup_ort_vs_keras_tf_function']:.2f}×" if "speedup_ort_vs_keras_tf_function" in row else "–",
                    *_int8_cells(m, row),
                    weights,
                ]
            )
    header = [
        "model",
        "batch",
        "Keras predict ms (median / p90)",
        "Keras tf.function ms",
        "onnxruntime ms (all cores)",
        "onnxruntime ms (1 thread)",
        "ORT (better thread setting) vs predict",
        "ORT vs tf.function",
        "ORT int8 ms (better thread setting)",
        "int8 vs predict",
        "int8 vs fp32",
        "Keras weights",
    ]
    text = _table(header, rows)
    if any_int8:
        text += (
            '\n\nint8: the manifest\'s `variants["int8"]` file (what SPINE_PRECISION=int8 serves), timed in the same '
            'interleaved loop with the same thread settings as fp32; "int8 vs fp32" compares each at its better '
            "thread setting (per-setting ratios in parentheses). Agreement with fp32 on real images: the manifest."
        )
    elif any("int8" in m for m in models):
        text += "\n\nint8: no model in this manifest has an int8 variant."
    return text


def efficiency_table(results: dict[str, Any]) -> str:
    eff = results["sections"].get("efficiency")
    if not eff:
        return "(not run)"
    peak = eff["peak"]
    rows = []
    for r in eff["models"]:
        batches = sorted(r["ort_gflops_per_s"], key=int)
        rows.append(
            [
                r["name"],
                f"{r['gflop_per_image']:.2f}",
                *[f"{r['ort_gflops_per_s'][b]:.1f} ({100 * r['fraction_of_peak'][b]:.0f}%)" for b in batches],
                *[f"{r['ort_slots_gflops_per_s'][b]:.1f} ({100 * r['slots_fraction_of_peak'][b]:.0f}%)" for b in batches],
                *[f"{r['ort_1thread_gflops_per_s'][b]:.1f}" for b in batches],
                *[_int8_gflops(r, b) for b in batches],
                str(r["transpose_nodes"]),
            ]
        )
    batches = sorted(eff["models"][0]["ort_gflops_per_s"], key=int) if eff["models"] else []
    cores = results["machine"]["cpu_threads_usable"]
    text = _table(
        [
            "model",
            "GFLOP / image",
            *[f"one call on {cores} threads, batch {b}: GFLOP/s (% of peak)" for b in batches],
            *[f"{cores} calls at once × 1 thread, batch {b}: GFLOP/s (% of peak)" for b in batches],
            *[f"1 thread, batch {b}: GFLOP/s" for b in batches],
            *[f"int8, batch {b}: fp32-equivalent GFLOP/s (one call / {cores} × 1 thread)" for b in batches],
            "Transpose nodes",
        ],
        rows,
    )
    meas = ", ".join(f"{p['best_gflops']:.1f} (median {p['median_gflops']:.1f})" for p in eff["peak_measurements"])
    return (
        text + f"\n\nPeak: float32 {peak['n']}×{peak['n']} matmul with numpy ({peak['blas']}): "
        f"best {peak['best_gflops']:.1f} GFLOP/s; measured before and after the per-model section: {meas}. "
        "FLOPs count 2 per multiply-accumulate of Conv/ConvTranspose/MatMul/Gemm (+ bias) "
        "and 1 per output element of element-wise, pooling and normalisation ops. "
        "int8 columns: the fp32 graph's FLOPs divided by the int8 file's time (\"fp32-equivalent\", to compare "
        "with the fp32 columns); not a % of the float32 matmul peak, which does not bound integer kernels, "
        "and not counted in the 50%-of-peak target."
    )


def _int8_gflops(r: dict[str, Any], b: str) -> str:
    one, slots = r.get("ort_int8_gflops_per_s_fp32_equivalent"), r.get("ort_int8_slots_gflops_per_s_fp32_equivalent")
    if not one or not slots:
        return "–"
    return f"{one[b]:.1f} / {slots[b]:.1f}"


def tuning_tables(results: dict[str, Any]) -> str:
    t = results["sections"].get("tuning")
    if not t:
        return "(not run)"
    names = t["unets"]
    parts = [
        f"Batch 1, each table one interleaved loop per model ({', '.join(names)}: one U-Net per distinct architecture); "
        "optimisation levels and batch scaling with 1 intra-op thread (one service slot):",
        "",
    ]
    levels = list(next(iter(t["levels"].values())))
    rows = [[lvl, *[_ms(t["levels"][n][lvl]) for n in names]] for lvl in levels]
    parts.append(_table(["graph optimisation level", *[f"{n} ms (median / p90)" for n in names]], rows))
    options = list(next(iter(t["threads"].values())))
    rows = [[o, *[_ms(t["threads"][n][o]) for n in names]] for o in options]
    parts += ["", _table(["intra-op threads", *[f"{n} ms (median / p90)" for n in names]], rows)]
    rows = []
    for name, d in t["saved_optimized"].items():
        c = d["session_create_ms"]
        rows.append(
            [name, f"{c['from_onnx_optimise_at_load']:.0f}", f"{c['from_saved_optimised_model']:.0f}", str(d["outputs_equal"])]
        )
    parts += [
        "",
        _table(["model", "session start, optimise at load (ms)", "from saved optimised model (ms)", "same outputs"], rows),
    ]
    rows = []
    for name, d in t["batch_scaling"].items():
        for b, r in d.items():
            rows.append([name, b, f"{r['median_ms']:.1f}", f"{r['per_image_ms']:.1f}", f"{r['per_image_vs_batch1']:.2f}"])
    parts += ["", _table(["model", "batch", "ms per call", "ms per image", "per image vs batch 1"], rows)]
    rows = []
    for view, d in t["view_parallel"].items():
        for k, v in d.items():
            if k != "models":
                rows.append([f"{view} ({len(d['models'])} U-Nets)", k, _ms(v)])
    parts += ["", _table(["view", "how", "ms for the view (median / p90)"], rows)]
    return "\n".join(parts)


def pipeline_tables(results: dict[str, Any]) -> str:
    p = results["sections"].get("pipeline")
    if not p:
        return "(not run)"
    parts = []
    if "classify_stages_ms_median" in p:
        s = p["classify_stages_ms_median"]
        parts += [
            f"One AP+LAT `/classify` in process (study {p['study']}, no HTTP), median per stage (ms):",
            "",
        ]
        variants: list[tuple[str, dict[str, float]]] = [("fp32", s)]
        c8 = p.get("classify_int8")
        if c8:
            served = c8["precision_served"]
            n_int8 = sum(v == "int8" for v in served.values())
            variants.append((f"int8 ({n_int8} of {len(served)} models int8)", c8["stages_ms_median"]))
        nm = p.get("classify_no_masks")
        if nm:
            variants.append(("fp32, include_masks=false", nm["stages_ms_median"]))
        two = p.get("classify_two_stage")
        if two:
            variants.append(("fp32, two-stage (SPINE_REFINEMENT=true)", two["stages_ms_median"]))
        # Columns in pipeline order; the two-stage run has one more (refinement), before classification.
        columns = list(dict.fromkeys([k for _, stages in reversed(variants) for k in stages]))
        columns = [c for c in columns if c != "total"] + ["total"]
        rows = [[label, *[f"{stages.get(k, 0):.1f}" for k in columns]] for label, stages in variants]
        parts += [_table(["variant", *columns], rows), ""]
        if two:
            parts += [
                f"Two-stage `/classify` ({', '.join(two['refinement_models'])}, SPINE_REFINEMENT=true) total "
                f"{two['total']['median_ms']:.0f} ms vs first stage only {p['classify_total']['median_ms']:.0f} ms "
                f"({two['cost_ratio_vs_first_stage']:.2f}× the time; same loop).",
                "",
            ]
        if nm:
            parts += [
                f"Label-only `/classify` (include_masks=false) total {nm['total']['median_ms']:.0f} ms vs "
                f"{p['classify_total']['median_ms']:.0f} ms with masks ({nm['speedup_total_vs_with_masks']:.2f}×; same loop).",
                "",
            ]
        if c8:
            parts += [
                f"int8 `/classify` total {c8['total']['median_ms']:.0f} ms vs fp32 {p['classify_total']['median_ms']:.0f} ms "
                f"({c8['speedup_total_vs_fp32']:.2f}×; same loop, alternating)."
            ]
            m8 = p.get("int8_masks_vs_fp32") or {}
            if m8:
                parts[-1] += " Masks of this study, int8 vs fp32, at the original size: " + ", ".join(
                    f"{k} Dice {v['dice_vs_fp32']:.3f}" for k, v in m8.items()
                )
            parts.append("")
    rows = []
    for name, d in p["postprocess"].items():
        e = p["encode"][name]
        rows.append(
            [
                name,
                f"{100 * d['mask_fraction']:.1f}%",
                f"{d['before_ms']:.1f} → {d['after_ms']:.1f}",
                str(d["differing_pixels"]),
                f"{e['pillow_level6_ms']:.1f} ({e['pillow_level6_base64_bytes'] / 1024:.0f} KiB)",
                f"{e['direct_level1_ms']:.1f} ({e['direct_level1_base64_bytes'] / 1024:.0f} KiB)",
                f"{e['direct_level3_ms']:.1f} ({e['direct_level3_base64_bytes'] / 1024:.0f} KiB)",
                f"{e['direct_level6_ms']:.1f} ({e['direct_level6_base64_bytes'] / 1024:.0f} KiB)",
                f"{e['area_sum_ms']:.2f} → {e['area_count_nonzero_ms']:.2f}",
            ]
        )
    parts.append(
        _table(
            [
                "mask",
                "mask area",
                "to original size ms (before → after)",
                "pixels differing",
                "PNG: Pillow level 6 (before)",
                "direct level 1",
                "direct level 3 (after)",
                "direct level 6",
                "area ms (sum → count_nonzero)",
            ],
            rows,
        )
    )
    tot, enc = p["postprocess_total_ms"], p["encode_total_ms"]
    parts.append(
        f"\nAll masks of the study: to original size {tot['before']:.1f} → {tot['after']:.1f} ms; "
        + "; ".join(f"encode {k}: {v:.1f} ms" for k, v in enc.items())
    )
    return "\n".join(parts)


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
    parts += [_table(header, rows), ""]
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
                        _f(r["server_cpu_s_per_request"], 2),
                        _f(r.get("client_cpu_s_per_request"), 3),
                    ]
                )
    parts.append(
        _table(
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
        parts.append(_table(["variant", "endpoint", *STAGES], stage_rows))
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
                    _ms(s["numpy_in_out"]),
                    _ms(s["iobinding_on_device"]),
                    f"{m['first_run_ms_exhaustive']:.0f}",
                    f"{m['first_run_ms_heuristic']:.0f}",
                ]
            )
    head = f"Device: {g.get('device')}; provider {g['provider']} (read back from every session).\n\n"
    return head + _table(
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
