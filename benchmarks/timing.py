"""Timing statistics and onnxruntime sessions configured like the service's."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def summarize(seconds: Sequence[float]) -> dict[str, float]:
    """Milliseconds: median, p90, p95, p99, mean, min, max and the sample count."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if ms.size == 0:
        return {"n": 0}
    return {
        "n": int(ms.size),
        "median_ms": float(np.median(ms)),
        "p90_ms": float(np.percentile(ms, 90)),
        "p95_ms": float(np.percentile(ms, 95)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "min_ms": float(ms.min()),
        "max_ms": float(ms.max()),
    }


def interleaved(fns: dict[str, Callable[[], Any]], runs: int, warmup: int) -> dict[str, dict[str, float]]:
    """Time several callables round-robin (order rotated each round), so machine noise hits all alike."""
    names = list(fns)
    for _ in range(warmup):
        for name in names:
            fns[name]()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(runs):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            t0 = time.perf_counter()
            fns[name]()
            samples[name].append(time.perf_counter() - t0)
    return {name: summarize(s) for name, s in samples.items()}


def cpu_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def ort_session(
    path: Path | str,
    *,
    providers: list[str] | None = None,
    intra: int | None = None,
    inter: int = 1,
    level: str = "all",
    spinning: bool | None = None,
    optimized_path: Path | None = None,
):
    """A session with the service's options (ModelRegistry.load) unless told otherwise."""
    import onnxruntime as ort

    from spine_engine import default_threads

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra or default_threads()
    options.inter_op_num_threads = inter
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    if spinning is not None:
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    if optimized_path is not None:
        options.optimized_model_filepath = str(optimized_path)
    return ort.InferenceSession(str(path), sess_options=options, providers=providers or ["CPUExecutionProvider"])


def machine_info() -> dict[str, Any]:
    import onnxruntime as ort

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        flags = next((ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")), "")
        simd = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags.split()]
    except OSError:
        simd = []
    mem_gib = None
    try:
        mem_kb = int(next(ln for ln in Path("/proc/meminfo").read_text().splitlines() if ln.startswith("MemTotal")).split()[1])
        mem_gib = round(mem_kb / 2**20, 1)
    except (OSError, StopIteration):
        pass
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cpu_threads_usable": cpu_threads(),
        "cpu_count": os.cpu_count(),
        "simd": simd,
        "memory_gib": mem_gib,
        "onnxruntime": ort.__version__,
        "onnxruntime_available_providers": ort.get_available_providers(),
        "numpy": np.__version__,
    }


def busy_processes(min_cpu_percent: float = 20.0, sample_s: float = 0.5) -> list[dict[str, Any]]:
    """Other processes using CPU right now (a benchmark on a busy machine is worth knowing about)."""
    try:
        import psutil
    except ImportError:
        return []
    me = os.getpid()
    procs = [p for p in psutil.process_iter(["pid", "name", "cmdline"]) if p.info["pid"] != me]
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.cpu_percent(None)
    time.sleep(sample_s)
    busy = []
    for p in procs:
        try:
            pct = p.cpu_percent(None)
        except psutil.Error:
            continue
        if pct >= min_cpu_percent:
            busy.append(
                {"pid": p.info["pid"], "cpu_percent": pct, "cmd": " ".join(p.info["cmdline"] or [p.info["name"] or ""])[:120]}
            )
    return busy


class PeriodicSampler:
    """A daemon thread running `_run` while the `with` block lasts; `_run` waits on `_stop` between samples."""

    def __init__(self, interval: float, name: str) -> None:
        import threading

        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)

    def _run(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class ForeignLoad(PeriodicSampler):
    """Samples, every `interval` s, the CPU used by processes outside this one and its children (servers it
    starts): a figure measured while something else ran is worth knowing about. Context manager."""

    def __init__(self, interval: float = 5.0) -> None:
        super().__init__(interval, "foreign-load")
        self.samples: list[float] = []
        self.top: dict[str, float] = {}

    def _run(self) -> None:
        try:
            import psutil
        except ImportError:
            return
        me = psutil.Process()
        seen: dict[int, psutil.Process] = {}
        while not self._stop.wait(self.interval):
            ours = {me.pid, *(c.pid for c in me.children(recursive=True))}
            total = 0.0
            for proc in psutil.process_iter(["pid", "cmdline", "name"]):
                if proc.pid in ours:
                    continue
                cached = seen.setdefault(proc.pid, proc)
                try:
                    pct = cached.cpu_percent(None)  # since the previous sample (0.0 the first time)
                except psutil.Error:
                    continue
                if pct > 0:
                    total += pct
                    cmd = " ".join(proc.info["cmdline"] or [proc.info["name"] or ""])[:100]
                    self.top[cmd] = max(self.top.get(cmd, 0.0), pct)
            self.samples.append(total)

    def summary(self) -> dict[str, Any]:
        s = self.samples[1:]  # the first sample has no interval behind it
        busy = sorted(self.top.items(), key=lambda kv: -kv[1])[:5]
        return {
            "samples": len(s),
            "interval_s": self.interval,
            "mean_cpu_percent": float(np.mean(s)) if s else 0.0,
            "max_cpu_percent": float(np.max(s)) if s else 0.0,
            "fraction_of_samples_over_20_percent": float(np.mean([v > 20 for v in s])) if s else 0.0,
            "top": [{"cmd": c, "max_cpu_percent": v} for c, v in busy if v > 5],
        }
