"""The benchmark suite in its quick mode, end to end, so it cannot rot (issue 5).

Random-weight stand-in models (benchmarks.synthetic --tiny), a generated image instead of ../shared,
a live spine-serve on 127.0.0.1: every section runs; the JSON must have the expected structure and sane
values (positive timings, no HTTP errors, GPU figures refused on a machine without CUDA). The synthetic
U-Nets carry int8 variants (training.quantize), so the int8 runners, pipeline row and server variant run
too; the classifier has none. No speed threshold is asserted: CI machines differ.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# `slow` (exports tiny Keras models with tf2onnx), by path: tests/conftest.py

REPO = Path(__file__).resolve().parents[2]
SECTIONS = ["models", "efficiency", "tuning", "pipeline", "http", "gpu"]
UNETS = ["Ap_Vertebra", "Lat_Vertebra"]  # with an int8 variant; Mask_Classifier and Ap_Vertebra_refine without
FP32_ONLY = ["Ap_Vertebra_refine", "Mask_Classifier"]
# What SPINE_PRECISION=int8 serves: the variants where there are some, fp32 for the rest.
INT8_SERVED = {"Ap_Vertebra": "int8", "Lat_Vertebra": "int8", "Mask_Classifier": "fp32", "Ap_Vertebra_refine": "fp32"}
INT8_VARIANT = "current, int8 (SPINE_PRECISION=int8)"


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    pytest.importorskip("tensorflow")
    pytest.importorskip("tf2onnx")
    tmp = tmp_path_factory.mktemp("bench")
    out = tmp / "results.json"
    markdown = tmp / "results.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINE_")}
    env.update({"TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": env.get("CUDA_VISIBLE_DEVICES", "")})
    cmd = [
        sys.executable, "-m", "benchmarks", "run", "--quick", "--synthetic", "tiny",
        "--data-dir", str(tmp / "no-shared-data"),  # as in CI: the generated-image fallback
        "--json", str(out), "--markdown", str(markdown),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    data = json.loads(out.read_text())
    data["_stdout"] = proc.stdout
    data["_stderr"] = proc.stderr
    data["_markdown"] = markdown.read_text()
    return data


def _positive_stats(stats: dict) -> None:
    assert stats["n"] >= 1
    for key in ("median_ms", "p90_ms", "min_ms"):
        assert stats[key] > 0, stats


def test_run_header(results: dict) -> None:
    assert results["mode"] == "quick"
    assert results["suite_version"] == 1
    assert results["machine"]["cpu_threads_usable"] >= 1
    assert results["models_in_manifest"] == ["Ap_Vertebra", "Lat_Vertebra", "Mask_Classifier", "Ap_Vertebra_refine"]
    assert results["models_with_int8_variant"] == UNETS
    assert set(results["sections"]) == set(SECTIONS)
    assert results["duration_s"] > 0
    assert "real_images" in results["skipped"]  # no ../shared here: said so, not silently
    assert "GENERATED" in results["_stderr"]


def test_per_model_section(results: dict) -> None:
    models = results["sections"]["models"]
    assert [m["name"] for m in models] == results["models_in_manifest"]
    for m in models:
        assert m["provider"] == "CPUExecutionProvider"
        assert m["flops_per_image"] > 0 and m["flops_by_op"]["Conv"] > 0
        assert m["keras"]["weights"] == "onnx", m["keras"]  # the ONNX weights went back into Keras, parity checked
        assert m["keras"]["parity_max_abs_diff"] <= 1e-3
        assert set(m["batches"]) == {"1", "8"}
        for row in m["batches"].values():
            for runner in ("keras_predict", "keras_tf_function", "onnxruntime", "onnxruntime_1thread", "onnxruntime_slots"):
                _positive_stats(row[runner])
            assert row["speedup_ort_vs_keras_predict"] > 0
            assert row["ort_gflops_per_s"] > 0 and row["ort_slots_gflops_per_s"] > 0


def test_per_model_int8_runners(results: dict) -> None:
    for m in results["sections"]["models"]:
        if m["name"] in UNETS:
            assert m["int8"]["available"] is True
            assert m["int8"]["file"] == f"{m['name']}/1/model.int8.onnx"
            assert 0 <= m["int8"]["agreement_vs_fp32"]["mask_dice_vs_fp32_min"] <= 1
            for row in m["batches"].values():
                for runner in ("onnxruntime_int8", "onnxruntime_int8_1thread", "onnxruntime_int8_slots"):
                    _positive_stats(row[runner])
                for key in ("speedup_int8_vs_fp32", "speedup_int8_vs_fp32_1thread", "speedup_ort_int8_vs_keras_predict"):
                    assert row[key] > 0, key
                assert row["ort_int8_gflops_per_s_fp32_equivalent"] > 0
        else:  # no variant: runners absent, figures null, and the JSON says why
            assert m["int8"]["available"] is False and "no int8 variant" in m["int8"]["reason"]
            for row in m["batches"].values():
                assert "onnxruntime_int8" not in row
                assert row["speedup_int8_vs_fp32"] is None and row["speedup_ort_int8_vs_keras_predict"] is None
    assert "int8 vs fp32" in results["_markdown"] and "no int8 variant" in results["_markdown"]


def test_efficiency_section(results: dict) -> None:
    eff = results["sections"]["efficiency"]
    assert eff["peak"]["best_gflops"] > 0
    assert len(eff["peak_measurements"]) == 2
    assert {r["name"] for r in eff["unets"]} == {"Ap_Vertebra", "Lat_Vertebra"}
    for r in eff["models"]:
        assert r["gflop_per_image"] > 0
        assert all(f > 0 for f in r["fraction_of_peak"].values())
        int8 = r["ort_int8_gflops_per_s_fp32_equivalent"]
        assert all(v > 0 for v in int8.values()) if r["name"] in UNETS else int8 is None, r["name"]


def test_tuning_section(results: dict) -> None:
    t = results["sections"]["tuning"]
    assert t["unets"] and set(t["levels"]) == set(t["unets"])
    for name in t["unets"]:
        assert set(t["levels"][name]) == {"disable", "basic", "extended", "all"}
        for stats in [*t["levels"][name].values(), *t["threads"][name].values()]:
            _positive_stats(stats)
    for d in t["saved_optimized"].values():
        assert d["outputs_equal"] is True
    assert set(t["view_parallel"]) == {"AP", "LAT"}


def test_pipeline_section(results: dict) -> None:
    p = results["sections"]["pipeline"]
    assert p["classify_total"]["median_ms"] > 0
    no_masks = p["classify_no_masks"]  # include_masks=false in the same loop
    assert no_masks["total"]["median_ms"] > 0 and no_masks["speedup_total_vs_with_masks"] > 0
    two = p["classify_two_stage"]  # the same /classify with the refinement model (SPINE_REFINEMENT=true), same loop
    assert two["refinement_models"] == ["Ap_Vertebra_refine"] and two["cost_ratio_vs_first_stage"] > 0
    assert "refinement" in two["stages_ms_median"] and "refinement" not in p["classify_stages_ms_median"]
    assert "fp32, two-stage" in results["_markdown"]
    c8 = p["classify_int8"]  # the same /classify on ModelRegistry.load(precision="int8")
    assert c8["total"]["median_ms"] > 0 and c8["speedup_total_vs_fp32"] > 0
    assert c8["precision_served"] == INT8_SERVED
    assert set(p["int8_masks_vs_fp32"]) == set(UNETS)
    for d in p["int8_masks_vs_fp32"].values():
        assert d["precision"] == "int8" and 0 <= d["dice_vs_fp32"] <= 1
    for name, d in p["postprocess"].items():
        assert d["differing_pixels"] == 0, name  # the cropped resize gives the full resize's mask
        assert d["before_ms"] > 0 and d["after_ms"] > 0
        assert p["encode"][name]["direct_png_decodes_equal"] is True


def test_http_section(results: dict) -> None:
    h = results["sections"]["http"]
    assert h["images"] == "generated"
    assert list(h["variants"]) == ["current", INT8_VARIANT]
    variant = h["variants"]["current"]
    assert set(variant["precision_served"].values()) == {"fp32"}
    assert variant["time_to_ready_s"] > 0
    assert variant["execution_provider"] == "CPUExecutionProvider"
    assert variant["metrics_ok"] is True
    assert set(variant["scenarios"]) == {"segment_ap", "segment_lat", "classify_ap_lat"}
    for scenario, by_c in variant["scenarios"].items():
        assert set(by_c) == {"1", "2"}
        for row in by_c.values():
            assert row["errors"] == 0, (scenario, row["error_samples"])
            _positive_stats(row["latency"])
            assert row["requests_per_s"] > 0
            assert row["peak_rss_mib"] > 50
            assert row["server_timings_ms_mean"]["total"] > 0


def test_http_int8_variant(results: dict) -> None:
    v = results["sections"]["http"]["variants"][INT8_VARIANT]
    assert v["env"] == {"SPINE_PRECISION": "int8"}
    assert v["precision_served"] == INT8_SERVED
    assert set(v["scenarios"]) == {"classify_ap_lat"}
    for row in v["scenarios"]["classify_ap_lat"].values():
        assert row["errors"] == 0, row["error_samples"]
        _positive_stats(row["latency"])


def test_gpu_refused_without_cuda(results: dict) -> None:
    gpu = results["sections"]["gpu"]
    if gpu["status"] == "ok":  # a CUDA machine: figures must come from CUDA sessions
        assert gpu["provider"] == "CUDAExecutionProvider"
        return
    assert gpu["status"] in ("refused", "not_available")
    assert gpu["models"] == []
    assert "No GPU figures" in results["_markdown"]


def test_targets_and_tables(results: dict) -> None:
    assert set(results["targets"]) == {
        "ort_3x_keras_predict",
        "ort_int8_3x_keras_predict",
        "unets_half_of_matmul_peak",
        "classify_ap_lat_under_1s",
    }
    assert results["targets"]["ort_3x_keras_predict"]["precision"] == "fp32"
    for key in ("ort_3x_keras_predict", "ort_int8_3x_keras_predict"):
        target = results["targets"][key]
        assert set(target["by_batch"]) == {"1", "8"}
        # the overall verdict is the worst batch's
        assert target["met"] == all(v["met"] for v in target["by_batch"].values())
        assert target["worst_ratio"] == min(v["worst_ratio"] for v in target["by_batch"].values())
    int8 = results["targets"]["ort_int8_3x_keras_predict"]
    assert set(int8["per_model_min_over_batches"]) == set(UNETS) and sorted(int8["models_without_int8"]) == FP32_ONLY
    assert "int8 variants (2 of 4 models)" in results["_markdown"]
    for heading in ("## 1. Per model", "## 2. Efficiency", "## 3. End-to-end HTTP", "## 4. GPU"):
        assert heading in results["_stdout"]
