"""onnxruntime levers measured on one U-Net per architecture (and the classifier), each table one interleaved loop.

Optimisation level, intra-op threads and spinning, a saved optimised model (session start-up), the
per-image cost of a batch (what micro-batching can gain), and a view's U-Nets run one after the
other on all cores versus side by side on one core each.
"""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.timing import LEVELS, cpu_threads, interleaved, ort_session
from spine_core.manifest import Manifest, ModelEntry


def _input(entry: ModelEntry, batch: int) -> np.ndarray:
    hw = tuple(int(d) for d in entry.input_shape[1:3])  # type: ignore[arg-type]
    x = np.random.default_rng(batch).random((batch, *hw, 1), dtype=np.float32)
    return (x > 0.5).astype(np.float32) if entry.kind == "classification" else x


def _runner(session, entry: ModelEntry, x: np.ndarray):
    return lambda: session.run([entry.output_name], {entry.input_name: x})


def _distinct_unets(models_dir: Path, manifest: Manifest) -> list[ModelEntry]:
    """One U-Net per distinct architecture (told apart by file size), largest first."""
    by_size: dict[int, ModelEntry] = {}
    for e in manifest.segmentation_models():
        by_size.setdefault((models_dir / e.file).stat().st_size, e)
    return [by_size[k] for k in sorted(by_size, reverse=True)]


def levels(models_dir: Path, entry: ModelEntry, runs: int, warmup: int) -> dict[str, Any]:
    x = _input(entry, 1)
    fns = {lvl: _runner(ort_session(models_dir / entry.file, level=lvl, intra=1), entry, x) for lvl in LEVELS}
    return interleaved(fns, runs, warmup)


def threads(models_dir: Path, entry: ModelEntry, runs: int, warmup: int) -> dict[str, Any]:
    x = _input(entry, 1)
    n = cpu_threads()
    options = {f"intra={n} spinning": (n, True), f"intra={n} no spinning": (n, False)}
    if n > 1:
        options.update({"intra=1 spinning": (1, True), "intra=1 no spinning": (1, False)})
    fns = {name: _runner(ort_session(models_dir / entry.file, intra=i, spinning=s), entry, x) for name, (i, s) in options.items()}
    return interleaved(fns, runs, warmup)


def saved_optimized(models_dir: Path, entry: ModelEntry, repeats: int = 3) -> dict[str, Any]:
    """Session creation time from the ONNX file (optimised at load) vs from a saved ORT_ENABLE_ALL model."""
    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "optimized.onnx"
        ort_session(models_dir / entry.file, optimized_path=optimized)
        x = _input(entry, 1)
        create: dict[str, list[float]] = {"from_onnx_optimise_at_load": [], "from_saved_optimised_model": []}
        sessions = {}
        for _ in range(repeats):
            t0 = time.perf_counter()
            sessions["a"] = ort_session(models_dir / entry.file)
            create["from_onnx_optimise_at_load"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            sessions["b"] = ort_session(optimized, level="disable")
            create["from_saved_optimised_model"].append(time.perf_counter() - t0)
        same = np.allclose(
            sessions["a"].run(None, {entry.input_name: x})[0], sessions["b"].run(None, {entry.input_name: x})[0], atol=1e-5
        )
        return {
            "session_create_ms": {k: float(np.median(v) * 1000) for k, v in create.items()},
            "outputs_equal": bool(same),
            "note": "a saved ORT_ENABLE_ALL model is specific to the CPU it was optimised on (NCHWc blocking)",
        }


def batch_scaling(models_dir: Path, entry: ModelEntry, runs: int, warmup: int, sizes=(1, 2, 4, 8)) -> dict[str, Any]:
    session = ort_session(models_dir / entry.file, intra=1)  # one service slot
    fns = {str(b): _runner(session, entry, _input(entry, b)) for b in sizes}
    stats = interleaved(fns, runs, warmup)
    base = stats[str(sizes[0])]["median_ms"] / sizes[0]
    return {
        b: {
            "median_ms": s["median_ms"],
            "per_image_ms": s["median_ms"] / int(b),
            "per_image_vs_batch1": s["median_ms"] / int(b) / base,
        }
        for b, s in stats.items()
    }


def view_parallel(models_dir: Path, entries: list[ModelEntry], runs: int, warmup: int) -> dict[str, Any]:
    """One view's U-Nets on one image: sequential with all cores per run vs one thread per core, 1 intra thread each."""
    n = cpu_threads()
    seq = [(ort_session(models_dir / e.file, intra=n, spinning=True), e) for e in entries]
    single = [(ort_session(models_dir / e.file, intra=1), e) for e in entries]
    x = _input(entries[0], 1)

    def sequential() -> None:
        for s, e in seq:
            s.run([e.output_name], {e.input_name: x})

    def parallel() -> None:
        todo = list(single)
        lock = threading.Lock()

        def worker() -> None:
            while True:
                with lock:
                    if not todo:
                        return
                    s, e = todo.pop(0)
                s.run([e.output_name], {e.input_name: x})

        ts = [threading.Thread(target=worker) for _ in range(min(n, len(single)))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    stats = interleaved(
        {f"sequential, intra={n}": sequential, f"{min(n, len(entries))} threads, intra=1": parallel}, runs, warmup
    )
    return {"models": [e.name for e in entries], **stats}


def run_tuning(models_dir: Path, manifest: Manifest, runs: int, warmup: int, log=print) -> dict[str, Any]:
    unets = _distinct_unets(models_dir, manifest)
    out: dict[str, Any] = {
        "unets": [u.name for u in unets],
        "levels": {},
        "threads": {},
        "saved_optimized": {},
        "batch_scaling": {},
    }
    for unet in unets:
        log(f"  {unet.name}: optimisation levels, threads and spinning, saved model, batch scaling ...")
        out["levels"][unet.name] = levels(models_dir, unet, runs, warmup)
        out["threads"][unet.name] = threads(models_dir, unet, runs, warmup)
        out["saved_optimized"][unet.name] = saved_optimized(models_dir, unet)
        out["batch_scaling"][unet.name] = batch_scaling(models_dir, unet, max(3, runs // 2), warmup)
    clf = manifest.classifier()
    if clf is not None:
        log(f"  {clf.name}: saved model, batch scaling ...")
        out["saved_optimized"][clf.name] = saved_optimized(models_dir, clf)
        out["batch_scaling"][clf.name] = batch_scaling(models_dir, clf, max(3, runs // 2), warmup, sizes=(1, 4, 8, 16))
    log("  view U-Nets sequential vs parallel ...")
    out["view_parallel"] = {}
    for view in ("AP", "LAT"):
        entries = [e for e in manifest.segmentation_models() if e.view == view]
        if entries:
            out["view_parallel"][view] = view_parallel(models_dir, entries, max(3, runs // 2), warmup)
    return out
