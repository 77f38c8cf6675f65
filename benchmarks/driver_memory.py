"""The spine-batch driver's own memory against archive size (issue 24): peak RSS of the driver process alone
(not Ray's GCS, raylet or workers), sampled every 0.1 s, for generated archives of several sizes.

    python -m benchmarks.driver_memory --films 100,1000 --models-dir /tmp/tiny-models [--ray-address HOST:6379]

Without --ray-address Ray starts on this machine (the driver then also starts Ray's processes, which are not
counted); with it the driver joins a running cluster, as on a head node. The films are small generated JPEGs
(spine check off): what the driver holds per image is an item and a row, whatever the film's size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from benchmarks.batch_bench import generated_films

REPO = Path(__file__).resolve().parents[1]


def driver_peak(films: Path, out: Path, models_dir: Path | None, address: str | None, actors: int) -> dict[str, float]:
    cmd = [sys.executable, "-m", "spine_batch.cli", str(films), "--out", str(out), "--view", "AP", "--no-progress"]
    cmd += ["--engine", "ray", "--actors", str(actors), "--stats-json", str(out.with_suffix(".json"))]
    cmd += ["--models-dir", str(models_dir)] if models_dir else []
    cmd += ["--ray-address", address] if address else []
    env = {**os.environ, "SPINE_SPINE_CHECK": "false"}  # generated films are not spines
    driver = psutil.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=(out.with_suffix(".log")).open("w"))
    peak = 0
    while driver.poll() is None:
        try:
            peak = max(peak, driver.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.1)
    if driver.wait() != 0:
        raise RuntimeError(out.with_suffix(".log").read_text()[-2000:])
    stats = json.loads(out.with_suffix(".json").read_text())
    return {"images": stats["images"], "seconds": stats["seconds"], "driver_peak_rss_mib": round(peak / 2**20, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.driver_memory", description=__doc__.splitlines()[0])
    p.add_argument("--films", default="100,1000", help="archive sizes, comma-separated (default 100,1000)")
    p.add_argument("--size", default="300,120", help="generated films' height,width (default 300,120)")
    p.add_argument("--models-dir", type=Path)
    p.add_argument("--ray-address")
    p.add_argument("--actors", type=int, default=1)
    args = p.parse_args(argv)
    height, width = (int(x) for x in args.size.split(","))
    runs = []
    with tempfile.TemporaryDirectory(prefix="driver-memory-") as tmp:
        for count in (int(x) for x in args.films.split(",")):
            films = generated_films(Path(tmp) / f"films-{count}", count, height=height, width=width)
            run = driver_peak(films, Path(tmp) / f"out-{count}", args.models_dir, args.ray_address, args.actors)
            runs.append({"films": count, **run})
            print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    print(json.dumps({"date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
