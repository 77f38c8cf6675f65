"""spine-batch throughput: the local engine at several worker counts vs Ray on this machine at several actor counts.

    python -m benchmarks.batch_bench --data-dir ../shared/data/aasce-train/images --json batch.json
    python -m benchmarks batch --films 24          # generated films when no data folder is given

Each configuration is a separate `spine-batch` process over the same films (a fresh results folder), so its
start-up (model loading, Ray's start) and memory are its own. Peak RSS is the largest sum, sampled every
0.1 s, over the process and all its descendants (Ray's raylet, GCS and workers included). Images per second
are given overall and "steady" (between the first and the last row: start-up excluded). The runs must agree:
every configuration's rows are compared with the first one's (label, score, per-mask probabilities).
On a shared machine the rates measure the share of the CPUs a run got as much as the engine; the CPU
seconds (user + system, every process of the tree, start-up included) are the sturdier figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pyarrow.parquet as pq
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".dcm")


def generated_films(folder: Path, count: int, seed: int = 0, height: int = 2000, width: int = 800) -> Path:
    """`count` radiograph-sized JPEGs (2000 x 800 by default, gray): noise, a gradient and a column of bright blocks."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        img = rng.normal(60, 12, size=(height, width)) + np.linspace(0, 50, height)[:, None]
        span, half = min(80, width // 10), min(70, width // 4)  # 80 and 70 at the default size
        cx = width // 2 + int(rng.integers(-span, span))
        for level in range(17):
            top = int(height * (0.08 + level * 0.05))
            img[top : top + int(height * 0.035), cx - half : cx + half] += 110
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(folder / f"film-{i:04d}.jpg", quality=90)
    return folder


def linked_subset(data_dir: Path, folder: Path, limit: int | None) -> Path:
    """The first `limit` films of `data_dir` (sorted), linked into `folder` (the data is never copied)."""
    folder.mkdir(parents=True, exist_ok=True)
    films = sorted(p for p in data_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    for film in films[:limit] if limit else films:
        (folder / film.name).symlink_to(film.resolve())
    return folder


class TreeSampler:
    """Samples a process and its descendants: the largest sum of RSS seen, and each process's latest CPU time
    (user + system), summed at the end. A process that ends between two samples loses at most 0.1 s of CPU."""

    def __init__(self, process: psutil.Process) -> None:
        self.process, self.peak_rss, self.cpu_s = process, 0, {}

    def sample(self) -> None:
        total = 0
        with contextlib.suppress(psutil.Error):  # the process ended between two samples
            for proc in [self.process, *self.process.children(recursive=True)]:
                with contextlib.suppress(psutil.Error), proc.oneshot():
                    total += proc.memory_info().rss
                    times = proc.cpu_times()
                    self.cpu_s[proc.pid] = times.user + times.system
        self.peak_rss = max(self.peak_rss, total)

    def cpu_seconds(self) -> float:
        return sum(self.cpu_s.values())


def run_config(
    films: Path, work: Path, engine: str, count: int, models_dir: Path | None, spine_check: bool = True
) -> dict[str, Any]:
    """One spine-batch process; returns its stats, peak RSS and results folder."""
    out, stats_path = work / "results.parquet", work / "stats.json"
    cmd = [sys.executable, "-m", "spine_batch.cli", str(films), "--out", str(out), "--view", "AP", "--no-progress"]
    cmd += ["--stats-json", str(stats_path), "--engine", engine]
    cmd += ["--workers", str(count)] if engine == "local" else ["--actors", str(count)]
    if models_dir:
        cmd += ["--models-dir", str(models_dir)]
    started = time.perf_counter()
    # Generated films are not spines: without SPINE_SPINE_CHECK=false every row would be a no_spine_found refusal.
    env = {**os.environ, "SPINE_SPINE_CHECK": "true" if spine_check else "false"}
    process = psutil.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=(work / "stderr.txt").open("w"))
    sampler = TreeSampler(process)
    while process.poll() is None:
        sampler.sample()
        time.sleep(0.1)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {process.returncode}: {(work / 'stderr.txt').read_text()[-2000:]}")
    stats = json.loads(stats_path.read_text())
    load = os.getloadavg()[0]
    return {
        **stats,
        "engine": engine,
        "parallelism": count,
        "process_s": round(time.perf_counter() - started, 2),
        "peak_rss_mib": round(sampler.peak_rss / 2**20),
        "cpu_s": round(sampler.cpu_seconds(), 1),
        "cpu_s_per_image": round(sampler.cpu_seconds() / max(1, stats["images"]), 3),
        "load_avg_1min_after": round(load, 2),
        "results": str(out),
    }


def stage_profile(films: Path, models_dir: Path | None, count: int, spine_check: bool = True) -> dict[str, Any]:
    """Where an image's time goes, one image at a time in this process (the service's own timings_ms, median
    over `count` films), and what the driver's side costs per row (JSON round trip as from a Ray actor + the
    Parquet part write), timed over the same rows written again and again (at least 5,000 rows)."""
    from spine_batch.results import ResultsStore
    from spine_batch.rows import RowOptions, classify_item
    from spine_batch.sources import source_items
    from spine_engine import answers
    from spine_engine.engine import load_engine
    from spine_engine.settings import EngineSettings
    from spine_engine.study import Film, StudyRequest

    settings = EngineSettings(**({"models_dir": models_dir} if models_dir else {}))
    engine = load_engine(settings)
    policy = replace(settings.policy(), spine_check=spine_check)
    options = RowOptions(default_view="AP", policy=policy)
    items = list(source_items(films))[:count]
    timings: list[dict[str, float]] = []
    rows = []
    for item in items:
        film = Film(Path(item.path).read_bytes(), Path(item.path).name, "AP")
        response = answers.classify(engine, StudyRequest(films=(film,), policy=policy), True, "rle")
        timings.append(response.timings_ms)
        rows.append(classify_item(engine, item, options))
    stages = {key: round(float(np.median([t.get(key, 0.0) for t in timings])), 1) for key in timings[0]}
    with tempfile.TemporaryDirectory() as tmp:
        store = ResultsStore(Path(tmp) / "out", chunk_rows=256)
        repeats = -(-5000 // len(rows))
        started = time.perf_counter()
        for i in range(repeats):
            for row in rows:
                store.add(json.loads(json.dumps(row)) | {"path": f"{i}/{row['path']}"})
        store.close()
        driver_ms = (time.perf_counter() - started) * 1000 / (repeats * len(rows))
    return {"films": len(items), "median_ms": stages, "driver_ms_per_row": round(driver_ms, 3)}


def _outcomes(results: Path) -> dict[str, tuple]:
    table = pq.read_table(results)
    columns = sorted(c for c in table.column_names if c in ("label", "score", "error_code") or c.startswith("p_damaged."))
    return {row["path"]: tuple(row[c] for c in columns) for row in table.select(["path", *columns]).to_pylist()}


def render(runs: list[dict[str, Any]]) -> str:
    lines = [
        "| engine | workers / actors | images | errors | wall s | first row s | images/s | steady images/s | peak RSS MiB "
        "| CPU s (all processes) | CPU s per image | same rows as the first |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in runs:
        lines.append(
            f"| {r['engine']} | {r['parallelism']} | {r['images']} | {r['errors']} | {r['seconds']:.1f} | "
            f"{r['first_row_s']:.1f} | {r['images_per_s']:.2f} | {r['steady_images_per_s']:.2f} | {r['peak_rss_mib']} | "
            f"{r['cpu_s']:.1f} | {r['cpu_s_per_image']:.3f} | {'yes' if r['same_rows'] else 'NO'} |"
        )
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.batch_bench", description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, help="a folder of films (e.g. ../shared/data/aasce-train/images); default: generated")
    p.add_argument("--limit", type=int, help="the first N films of --data-dir only")
    p.add_argument("--films", type=int, default=24, help="generated films when no --data-dir (default 24)")
    p.add_argument("--models-dir", type=Path, help="default: SPINE_MODELS_DIR or exported_models/")
    p.add_argument("--workers", type=_ints, default=[1, 2, 3], help="local engine worker counts (default 1,2,3)")
    p.add_argument("--actors", type=_ints, default=[1, 2], help="Ray actor counts (default 1,2; empty: no Ray run)")
    p.add_argument("--stages", type=int, default=0, help="also profile N films by stage in this process (default 0: no)")
    p.add_argument("--json", type=Path, help="write the runs here")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="batch-bench-") as tmp:
        root = Path(tmp)
        if args.data_dir:
            films = linked_subset(args.data_dir, root / "films", args.limit)
            source = f"{args.data_dir} ({'first ' + str(args.limit) if args.limit else 'all'})"
        else:
            films = generated_films(root / "films", args.films)
            source = f"{args.films} generated 2000x800 JPEGs (spine check off)"
        profile = stage_profile(films, args.models_dir, args.stages, args.data_dir is not None) if args.stages else None
        configs = [("local", w) for w in args.workers] + [("ray", a) for a in args.actors]
        runs: list[dict[str, Any]] = []
        reference: dict[str, tuple] | None = None
        for i, (engine, count) in enumerate(configs):
            work = root / f"run-{i}"
            work.mkdir()
            run = run_config(films, work, engine, count, args.models_dir, spine_check=args.data_dir is not None)
            outcomes = _outcomes(Path(run.pop("results")))
            reference = reference if reference is not None else outcomes
            run["same_rows"] = outcomes == reference
            runs.append(run)
            print(f"{engine} x{count}: {run['steady_images_per_s']:.2f} images/s steady", file=sys.stderr, flush=True)
    report = {
        "source": source,
        "cpus": len(os.sched_getaffinity(0)),
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "runs": runs,
        "stages": profile,
    }
    print(f"films: {source}; CPUs: {report['cpus']}\n")
    print(render(runs))
    if profile:
        stages = ", ".join(f"{k} {v} ms" for k, v in profile["median_ms"].items())
        print(f"\nper image, one at a time (median of {profile['films']}): {stages}")
        print(f"driver, per row (JSON round trip + Parquet): {profile['driver_ms_per_row']} ms")
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    return 0 if all(r["same_rows"] for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
