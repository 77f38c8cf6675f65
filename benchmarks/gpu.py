"""Section 4: the same models on CUDA, reported only when a session really runs on CUDAExecutionProvider.

No GPU figure is ever written from a session that fell back to the CPU: the provider of each session
is read back with `session.get_providers()[0]` and anything but CUDAExecutionProvider is a refusal.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.timing import interleaved, ort_session
from spine_core.manifest import Manifest

CUDA = "CUDAExecutionProvider"


def device_name() -> str | None:
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=True,
        )
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def check_cuda(models_dir: Path, manifest: Manifest) -> dict[str, Any]:
    """{'usable': bool, 'reason': ..., 'provider': what a session actually runs on, 'device': name}."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if CUDA not in available:
        return {"usable": False, "provider": None, "reason": f"{CUDA} is not in this onnxruntime build's providers {available}"}
    entry = manifest.models[0]
    try:
        session = ort_session(models_dir / entry.file, providers=[CUDA, "CPUExecutionProvider"])
    except Exception as exc:
        return {"usable": False, "provider": None, "reason": f"creating a CUDA session failed: {exc}"}
    provider = session.get_providers()[0]
    if provider != CUDA:
        return {
            "usable": False,
            "provider": provider,
            "reason": f"the session runs on {provider}, not {CUDA} (CUDA libraries or device missing): GPU figures refused",
        }
    return {"usable": True, "provider": provider, "device": device_name()}


def run_gpu(models_dir: Path, manifest: Manifest, runs: int, warmup: int, batches=(1, 8), log=print) -> dict[str, Any]:
    status = check_cuda(models_dir, manifest)
    if not status["usable"]:
        log(f"  GPU: {status['reason']}")
        return {"status": "refused" if status.get("provider") else "not_available", **status, "models": []}
    import onnxruntime as ort

    results = []
    for entry in manifest.models:
        row: dict[str, Any] = {"name": entry.name, "batches": {}}
        hw = tuple(int(d) for d in entry.input_shape[1:3])  # type: ignore[arg-type]
        # First request with cuDNN's exhaustive algorithm search (the default) vs the heuristic.
        for search in ("EXHAUSTIVE", "HEURISTIC"):
            t0 = time.perf_counter()
            s = ort.InferenceSession(
                str(models_dir / entry.file),
                providers=[(CUDA, {"cudnn_conv_algo_search": search}), "CPUExecutionProvider"],
            )
            x = np.zeros((1, *hw, 1), np.float32)
            s.run(None, {entry.input_name: x})
            row[f"first_run_ms_{search.lower()}"] = (time.perf_counter() - t0) * 1000
        session = ort_session(models_dir / entry.file, providers=[CUDA, "CPUExecutionProvider"])
        provider = session.get_providers()[0]
        if provider != CUDA:  # never report a CPU figure as a GPU one
            return {"status": "refused", "provider": provider, "reason": f"{entry.name} session runs on {provider}", "models": []}
        row["provider"] = provider
        for batch in batches:
            x = np.random.default_rng(batch).random((batch, *hw, 1), dtype=np.float32)
            binding = session.io_binding()
            x_dev = ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
            binding.bind_ortvalue_input(entry.input_name, x_dev)
            binding.bind_output(entry.output_name, "cuda")

            def with_binding(b=binding, s=session) -> None:
                s.run_with_iobinding(b)
                b.synchronize_outputs()

            stats = interleaved(
                {
                    "numpy_in_out": lambda x=x, s=session, e=entry: s.run([e.output_name], {e.input_name: x}),
                    "iobinding_on_device": with_binding,
                },
                runs,
                warmup,
            )
            row["batches"][str(batch)] = stats
        results.append(row)
        log(f"  {entry.name}: b1 {row['batches'][str(batches[0])]['numpy_in_out']['median_ms']:.2f} ms on {status.get('device')}")
    return {"status": "ok", **status, "models": results}
