"""The benchmark suite in its quick mode, end to end, so it cannot rot (issue 5).

Random-weight stand-in models (benchmarks.synthetic --tiny), a generated image instead of ../shared,
a live spine-serve on 127.0.0.1: every section runs; the JSON must have the expected structure and sane
values (positive timings, no HTTP errors, GPU figures refused on a machine without CUDA). No speed
threshold is asserted: CI machines differ.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # exports (tiny) Keras models with tf2onnx

REPO = Path(__file__).resolve().parents[2]
SECTIONS = ["models", "efficiency", "tuning", "pipeline", "http", "gpu"]


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
    assert results["models_in_manifest"] == ["Ap_Vertebra", "Lat_Vertebra", "Mask_Classifier"]
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


def test_efficiency_section(results: dict) -> None:
    eff = results["sections"]["efficiency"]
    assert eff["peak"]["best_gflops"] > 0
    assert len(eff["peak_measurements"]) == 2
    assert {r["name"] for r in eff["unets"]} == {"Ap_Vertebra", "Lat_Vertebra"}
    for r in eff["models"]:
        assert r["gflop_per_image"] > 0
        assert all(f > 0 for f in r["fraction_of_peak"].values())


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
    for name, d in p["postprocess"].items():
        assert d["differing_pixels"] == 0, name  # the cropped resize gives the full resize's mask
        assert d["before_ms"] > 0 and d["after_ms"] > 0
        assert p["encode"][name]["direct_png_decodes_equal"] is True


def test_http_section(results: dict) -> None:
    h = results["sections"]["http"]
    assert h["images"] == "generated"
    (variant,) = h["variants"].values()
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


def test_gpu_refused_without_cuda(results: dict) -> None:
    gpu = results["sections"]["gpu"]
    if gpu["status"] == "ok":  # a CUDA machine: figures must come from CUDA sessions
        assert gpu["provider"] == "CUDAExecutionProvider"
        return
    assert gpu["status"] in ("refused", "not_available")
    assert gpu["models"] == []
    assert "No GPU figures" in results["_markdown"]


def test_targets_and_tables(results: dict) -> None:
    assert set(results["targets"]) == {"ort_3x_keras_predict", "unets_half_of_matmul_peak", "classify_ap_lat_under_1s"}
    for heading in ("## 1. Per model", "## 2. Efficiency", "## 3. End-to-end HTTP", "## 4. GPU"):
        assert heading in results["_stdout"]
