"""The report's tables for the sections timed in process: per model, efficiency, onnxruntime levers, pipeline."""

from __future__ import annotations

from typing import Any

from benchmarks.report_markdown import markdown_table, median_p90


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
        f"{median_p90(best)} ({_threads(row, 'ort_int8_best')})",
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
                    median_p90(row.get("keras_predict")),
                    median_p90(row.get("keras_tf_function")),
                    median_p90(row.get("onnxruntime")),
                    median_p90(row.get("onnxruntime_1thread")),
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
    text = markdown_table(header, rows)
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
    text = markdown_table(
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
    rows = [[lvl, *[median_p90(t["levels"][n][lvl]) for n in names]] for lvl in levels]
    parts.append(markdown_table(["graph optimisation level", *[f"{n} ms (median / p90)" for n in names]], rows))
    options = list(next(iter(t["threads"].values())))
    rows = [[o, *[median_p90(t["threads"][n][o]) for n in names]] for o in options]
    parts += ["", markdown_table(["intra-op threads", *[f"{n} ms (median / p90)" for n in names]], rows)]
    rows = []
    for name, d in t["saved_optimized"].items():
        c = d["session_create_ms"]
        rows.append(
            [name, f"{c['from_onnx_optimise_at_load']:.0f}", f"{c['from_saved_optimised_model']:.0f}", str(d["outputs_equal"])]
        )
    parts += [
        "",
        markdown_table(
            ["model", "session start, optimise at load (ms)", "from saved optimised model (ms)", "same outputs"], rows
        ),
    ]
    rows = []
    for name, d in t["batch_scaling"].items():
        for b, r in d.items():
            rows.append([name, b, f"{r['median_ms']:.1f}", f"{r['per_image_ms']:.1f}", f"{r['per_image_vs_batch1']:.2f}"])
    parts += ["", markdown_table(["model", "batch", "ms per call", "ms per image", "per image vs batch 1"], rows)]
    rows = []
    for view, d in t["view_parallel"].items():
        for k, v in d.items():
            if k != "models":
                rows.append([f"{view} ({len(d['models'])} U-Nets)", k, median_p90(v)])
    parts += ["", markdown_table(["view", "how", "ms for the view (median / p90)"], rows)]
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
        parts += [markdown_table(["variant", *columns], rows), ""]
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
        markdown_table(
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
