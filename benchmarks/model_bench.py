"""Section 1 and 2: every model with Keras `predict`, Keras `tf.function` and onnxruntime, plus FLOPs.

For each model the Keras architecture is rebuilt from the manifest's `architecture_config` and given
the ONNX file's weights (benchmarks.keras_weights, checked by parity); the runners get the same
input and are timed round-robin in one loop, so a noisy machine slows them alike. Where the manifest
lists an int8 variant (`variants["int8"]`, what SPINE_PRECISION=int8 serves), onnxruntime runners on
that file with the same thread settings join the same loop, so the int8 / fp32 ratios hold.
"""

from __future__ import annotations

import gc
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.flops import count_flops
from benchmarks.timing import cpu_threads, interleaved, ort_session
from spine_core.manifest import ModelEntry

INT8 = "int8"
# Runner suffixes shared by the fp32 and int8 onnxruntime runners (same thread settings).
ORT_SETTINGS = ("", "_1thread", "_slots")


def _keras_runners(model, x: np.ndarray) -> dict[str, Any]:
    import tensorflow as tf

    batch = len(x)
    fn = tf.function(lambda t: model(t, training=False), jit_compile=False, reduce_retracing=True)
    xt = tf.constant(x)
    return {
        "keras_predict": lambda: model.predict(x, batch_size=batch, verbose=0),
        "keras_tf_function": lambda: fn(xt).numpy(),
    }


def architecture_config(entry: ModelEntry, onnx_path: Path) -> tuple[dict[str, Any] | None, str]:
    """The manifest's `architecture_config`, or one read off the ONNX graph for an entry exported without it.

    A guess is safe: the rebuilt model only counts as "same weights" when it reproduces the ONNX outputs.
    """
    if entry.architecture_config.get("builder"):
        return dict(entry.architecture_config), "manifest"
    import onnx

    graph = onnx.load(str(onnx_path)).graph
    inits = {i.name: list(i.dims) for i in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    hw = [int(d) for d in entry.input_shape[1:3]]  # type: ignore[arg-type]
    if entry.kind == "segmentation" and "U-Net" in entry.architecture and convs and convs[0].input[1] in inits:
        pools = sum(n.op_type == "MaxPool" for n in graph.node)
        config = {
            "builder": "training.models.build_unet",
            "input_hw": hw,
            "filters": inits[convs[0].input[1]][0],
            "num_layers": pools,
        }
        return config, "inferred from the ONNX graph (the manifest entry has no architecture_config)"
    if entry.kind == "classification" and "ResNet50" in entry.architecture:
        return {"builder": "training.models.build_classifier", "input_hw": hw}, "inferred from the manifest's architecture text"
    return None, "the manifest entry has no architecture_config and the architecture is not recognised: Keras skipped"


def int8_variant(models_dir: Path, entry: ModelEntry) -> tuple[Path | None, dict[str, Any]]:
    """The int8 file of `entry` and what the JSON says about it; (None, reason) where there is none to time."""
    variant = entry.variants.get(INT8)
    if variant is None:
        return None, {"available": False, "reason": "the manifest entry lists no int8 variant: int8 runners absent"}
    path = models_dir / variant.file
    info: dict[str, Any] = {
        "available": path.is_file(),
        "file": variant.file,
        "sha256": variant.sha256,
        "method": variant.method,
        "calibration_data": variant.calibration_data,
        "agreement_vs_fp32": variant.agreement,  # from the manifest (real images), not measured here
    }
    if not path.is_file():
        info["reason"] = f"variant file {variant.file} is missing: int8 runners absent"
        return None, info
    return path, info


def _slots_runner(pool: ThreadPoolExecutor, sessions: list, x: np.ndarray, in_name: str, out_name: str):
    def slots() -> None:
        # len(sessions) calls at once, one thread each: the service's scheduler under load (throughput)
        for f in [pool.submit(s.run, [out_name], {in_name: x}) for s in sessions]:
            f.result()

    return slots


def bench_model(
    models_dir: Path,
    entry: ModelEntry,
    batches: tuple[int, ...],
    runs: int,
    warmup: int,
    keras: bool = True,
    providers: list[str] | None = None,
) -> dict[str, Any]:
    onnx_path = models_dir / entry.file
    cores = cpu_threads()

    def sessions(path: Path) -> dict[str, Any]:
        return {
            "": ort_session(path, providers=providers, intra=cores, spinning=True),  # one call on every core
            "_1thread": ort_session(path, providers=providers, intra=1),  # what one service slot runs
            "_slots": [ort_session(path, providers=providers, intra=1) for _ in range(cores)],
        }

    fp32_sessions = sessions(onnx_path)
    session = fp32_sessions[""]
    int8_path, int8_info = int8_variant(models_dir, entry)
    int8_sessions = sessions(int8_path) if int8_path is not None else None
    pool = ThreadPoolExecutor(max_workers=cores)
    result: dict[str, Any] = {
        "name": entry.name,
        "kind": entry.kind,
        "input_shape": entry.input_shape,
        "parameters": entry.parameters,
        "provider": session.get_providers()[0],
        "cores": cores,
        "architecture_config": entry.architecture_config,
        "int8": int8_info,
        "batches": {},
    }
    model = None
    if keras:
        config, source = architecture_config(entry, onnx_path)
        if config is None:
            result["keras"] = {"weights": "none", "reason": source}
            keras = False
        else:
            from benchmarks.keras_weights import keras_with_onnx_weights

            model, info = keras_with_onnx_weights(config, str(onnx_path))
            result["keras"] = {**info, "architecture_from": source, "architecture_config": config}
    hw = tuple(int(d) for d in entry.input_shape[1:3])  # type: ignore[arg-type]
    flops = count_flops(onnx_path, 1)
    result["flops_per_image"] = flops["per_image"]
    result["flops_by_op"] = flops["by_op"]
    result["graph_ops"] = flops["ops"]
    result["transpose_nodes"] = flops["transpose_nodes"]
    for batch in batches:
        x = np.random.default_rng(batch).random((batch, *hw, 1), dtype=np.float32)
        if entry.kind == "classification":
            x = (x > 0.5).astype(np.float32)  # masks
        in_name, out_name = entry.input_name, entry.output_name
        fns: dict[str, Any] = {}
        for prefix, group in (("onnxruntime", fp32_sessions), ("onnxruntime_int8", int8_sessions)):
            if group is None:
                continue
            for suffix in ("", "_1thread"):
                fns[prefix + suffix] = lambda x=x, s=group[suffix], i=in_name, o=out_name: s.run([o], {i: x})[0]
            fns[prefix + "_slots"] = _slots_runner(pool, group["_slots"], x, in_name, out_name)
        if model is not None:
            fns.update(_keras_runners(model, x))
        stats = interleaved(fns, runs, warmup)
        row: dict[str, Any] = {"runs": runs, "warmup": warmup, **{k: stats[k] for k in fns}}
        ort_med = stats["onnxruntime"]["median_ms"]
        gflop = flops["per_image"] * batch / 1e9
        row["ort_gflops_per_s"] = gflop / (ort_med / 1000)
        row["ort_1thread_gflops_per_s"] = gflop / (stats["onnxruntime_1thread"]["median_ms"] / 1000)
        row["ort_slots_gflops_per_s"] = cores * gflop / (stats["onnxruntime_slots"]["median_ms"] / 1000)
        # The headline uses onnxruntime's better thread setting for this model (1 thread is what a service slot runs).
        one_med = stats["onnxruntime_1thread"]["median_ms"]
        best_med = min(ort_med, one_med)
        row["ort_best"] = "onnxruntime_1thread" if one_med < ort_med else "onnxruntime"
        if model is not None:
            row["speedup_ort_vs_keras_predict"] = stats["keras_predict"]["median_ms"] / best_med
            row["speedup_ort_vs_keras_tf_function"] = stats["keras_tf_function"]["median_ms"] / best_med
            row["speedup_ort_all_cores_vs_keras_predict"] = stats["keras_predict"]["median_ms"] / ort_med
            row["speedup_ort_1thread_vs_keras_predict"] = stats["keras_predict"]["median_ms"] / one_med
            row["keras_tf_function_gflops_per_s"] = (
                flops["per_image"] * batch / (stats["keras_tf_function"]["median_ms"] / 1000) / 1e9
            )
        row.update(_int8_row(stats, best_med, gflop, cores, model is not None))
        result["batches"][str(batch)] = row
    pool.shutdown()
    if model is not None:
        import keras as k

        del model
        k.backend.clear_session()
        gc.collect()
    return result


def _int8_row(stats: dict[str, dict[str, float]], fp32_best_ms: float, gflop: float, cores: int, keras: bool) -> dict[str, Any]:
    """int8 figures of one batch; None where the model has no int8 variant (so every row has the same keys)."""
    keys = [
        "ort_int8_best",
        "speedup_int8_vs_fp32",
        "speedup_int8_vs_fp32_all_cores",
        "speedup_int8_vs_fp32_1thread",
        "speedup_int8_vs_fp32_slots",
        "speedup_ort_int8_vs_keras_predict",
        "ort_int8_gflops_per_s_fp32_equivalent",
        "ort_int8_1thread_gflops_per_s_fp32_equivalent",
        "ort_int8_slots_gflops_per_s_fp32_equivalent",
    ]
    out: dict[str, Any] = dict.fromkeys(keys)
    if "onnxruntime_int8" not in stats:
        return out
    med = {suffix: stats["onnxruntime_int8" + suffix]["median_ms"] for suffix in ORT_SETTINGS}
    fp32 = {suffix: stats["onnxruntime" + suffix]["median_ms"] for suffix in ORT_SETTINGS}
    best = min(med[""], med["_1thread"])
    out["ort_int8_best"] = "onnxruntime_int8_1thread" if med["_1thread"] < med[""] else "onnxruntime_int8"
    # Headline: each precision at its better thread setting; the per-setting ratios compare like with like.
    out["speedup_int8_vs_fp32"] = fp32_best_ms / best
    out["speedup_int8_vs_fp32_all_cores"] = fp32[""] / med[""]
    out["speedup_int8_vs_fp32_1thread"] = fp32["_1thread"] / med["_1thread"]
    out["speedup_int8_vs_fp32_slots"] = fp32["_slots"] / med["_slots"]
    if keras:
        out["speedup_ort_int8_vs_keras_predict"] = stats["keras_predict"]["median_ms"] / best
    # The fp32 graph's FLOP count over the int8 time: comparable across precisions, not a count of int8 operations.
    out["ort_int8_gflops_per_s_fp32_equivalent"] = gflop / (med[""] / 1000)
    out["ort_int8_1thread_gflops_per_s_fp32_equivalent"] = gflop / (med["_1thread"] / 1000)
    out["ort_int8_slots_gflops_per_s_fp32_equivalent"] = cores * gflop / (med["_slots"] / 1000)
    return out


def run_models(
    models_dir: Path,
    entries: list[ModelEntry],
    batches: tuple[int, ...],
    runs: int,
    warmup: int,
    keras: bool = True,
    log=print,
) -> list[dict[str, Any]]:
    if keras:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            import tensorflow  # noqa: F401
        except ImportError:
            log("  tensorflow is not installed (train extra): Keras columns skipped")
            keras = False
    out = []
    for entry in entries:
        log(f"  {entry.name} ...")
        out.append(bench_model(models_dir, entry, batches, runs, warmup, keras))
    return out
