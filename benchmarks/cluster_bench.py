"""spine-batch on a multi-host Ray cluster made of network namespaces (issue 24): images/s with 1 and 2 worker
hosts, what losing a worker host mid-run costs, and the driver's memory and the object store against archive size.

    python -m benchmarks.cluster_bench --data-dir ../shared/data/aasce-train/images --limit 96 --hosts 1,2 --loss 2
    python -m benchmarks.cluster_bench --films 100,1000 --models-dir /tmp/tiny-models --hosts 2   # memory vs size

Each configuration is one `spine-batch --engine ray` driver on the head host (benchmarks/netns_cluster.py: a head
without CPUs and N worker hosts of --worker-cpus each), a fresh results folder, default actors (the cluster's
CPUs). Sampled every 0.25 s: the driver's RSS (that process alone: what grows with the archive if anything does),
the CPU time of every process of every host (Ray's GCS, raylets and workers included; start-up included), and
every second the object store's bytes in use across the cluster. With --loss, host 2 is killed (SIGKILL, every
process) as soon as one of its rows is in the results, and the run's wall time is compared with the same run
without the loss. Root and iproute2 needed. The hosts share this machine's cores: on a 2-core VM, two hosts of 2
CPUs are four logical CPUs on two cores, so images/s measures the share of the machine, CPU-seconds per image
is the sturdier figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pyarrow.parquet as pq

from benchmarks.batch_bench import generated_films, linked_subset
from benchmarks.netns_cluster import NetnsCluster, unavailable_reason

# A sidecar on the head: the object store's bytes in use, cluster-wide, once a second (what `ray memory
# --stats-only` prints, without a new process each time).
STORE_PROBE = """
import sys, time, ray
from ray._private.internal_api import get_memory_info_reply, get_state_from_address
ray.init(address=sys.argv[1], log_to_driver=False, logging_level="ERROR")
while True:
    try:
        print(get_memory_info_reply(get_state_from_address(sys.argv[1])).store_stats.object_store_bytes_used, flush=True)
    except Exception:  # the raylet it asked has just been killed (--loss): ask again
        pass
    time.sleep(1)
"""


RUN_TIMEOUT_S = 1200  # a run that stalls (a lost node and no room for its actors) fails instead of waiting forever


class ClusterSampler(threading.Thread):
    """Driver RSS peak and the CPU seconds of every process of the cluster's hosts since the sampler started."""

    def __init__(self, cluster: NetnsCluster, driver: psutil.Process, exclude: set[int]) -> None:
        super().__init__(daemon=True)
        self.cluster, self.driver, self.exclude = cluster, driver, exclude
        self.inodes = {os.stat(f"/run/netns/{ns}").st_ino for ns in cluster.namespaces}
        self.baseline: dict[int, float] = {}
        self.latest: dict[int, float] = {}
        self.driver_peak = 0
        self.stop = threading.Event()
        self._sample(first=True)

    def _sample(self, first: bool = False) -> None:
        with contextlib.suppress(psutil.Error):
            self.driver_peak = max(self.driver_peak, self.driver.memory_info().rss)
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.Error, OSError):
                if proc.pid in self.exclude or os.stat(f"/proc/{proc.pid}/ns/net").st_ino not in self.inodes:
                    continue
                times = proc.cpu_times()
                cpu = times.user + times.system
                if first:
                    self.baseline[proc.pid] = cpu
                self.latest[proc.pid] = cpu

    def run(self) -> None:
        while not self.stop.wait(0.25):
            self._sample()

    def cpu_seconds(self) -> float:
        return sum(cpu - self.baseline.get(pid, 0.0) for pid, cpu in self.latest.items())


def _rows_by_host(out: Path) -> Counter[str]:
    hosts: Counter[str] = Counter()
    for part in sorted(out.glob("part-*.parquet")):
        with contextlib.suppress(OSError):
            hosts.update(pq.read_table(part, columns=["host"]).column("host").to_pylist())
    return hosts


def cluster_run(
    cluster: NetnsCluster, films: Path, work: Path, models_dir: Path | None, actors: int | None = None, kill: int | None = None
) -> dict[str, Any]:
    """One spine-batch driver on the head; its stats, the samples, and the loss's timeline when `kill` is a host."""
    out, stats = work / "results.parquet", work / "stats.json"
    cmd = [sys.executable, "-m", "spine_batch.cli", str(films), "--out", str(out), "--view", "AP", "--no-progress"]
    cmd += ["--engine", "ray", "--ray-address", cluster.address, "--stats-json", str(stats), "--chunk-rows", "8"]
    cmd += ["--models-dir", str(models_dir)] if models_dir else []
    cmd += ["--actors", str(actors)] if actors else []
    probe = cluster.run(0, [sys.executable, "-c", STORE_PROBE, cluster.address], stdout=subprocess.PIPE, text=True)
    store_peak = [0]

    def read_probe() -> None:
        for line in probe.stdout or []:
            with contextlib.suppress(ValueError):
                store_peak[0] = max(store_peak[0], int(line))

    threading.Thread(target=read_probe, daemon=True).start()
    log = (work / "driver.log").open("w")
    started = time.monotonic()
    driver = cluster.run(0, cmd, stdout=log, stderr=subprocess.STDOUT)
    sampler = ClusterSampler(cluster, psutil.Process(driver.pid), exclude={probe.pid})
    sampler.start()
    timeline: dict[str, Any] = {}
    try:
        if kill is not None:
            doomed = cluster.addresses[kill]
            while not _rows_by_host(out)[doomed] and driver.poll() is None:
                time.sleep(0.2)
            timeline = {"killed_at_s": round(time.monotonic() - started, 1), "rows_before_kill": sum(_rows_by_host(out).values())}
            timeline["processes_killed"] = cluster.kill_host(kill)
        rc = driver.wait(timeout=RUN_TIMEOUT_S)
    finally:
        sampler.stop.set()
        sampler.join()
        for proc in (driver, probe):
            if proc.poll() is None:
                proc.kill()
    wall = time.monotonic() - started
    if rc != 0:
        raise RuntimeError(f"spine-batch exited {rc}: {(work / 'driver.log').read_text()[-2000:]}")
    run = json.loads(stats.read_text())
    rows = pq.read_table(out, columns=["path"]).column("path").to_pylist()
    return {
        **run,
        **timeline,
        "wall_s": round(wall, 1),
        "rows": len(rows),
        "distinct_paths": len(set(rows)),
        "rows_by_host": dict(_rows_by_host(out)),
        "cpu_s": round(sampler.cpu_seconds(), 1),
        "cpu_s_per_image": round(sampler.cpu_seconds() / max(1, run["images"]), 3),
        "driver_peak_rss_mib": round(sampler.driver_peak / 2**20, 1),
        "object_store_peak_mib": round(store_peak[0] / 2**20, 1),
        "load_avg_1min": round(os.getloadavg()[0], 2),
    }


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.cluster_bench", description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, help="a folder of films (e.g. ../shared/data/aasce-train/images)")
    p.add_argument("--limit", type=int, help="the first N films of --data-dir")
    p.add_argument("--films", type=_ints, default=[24], help="without --data-dir: generated films, one run per count")
    p.add_argument("--size", type=_ints, default=[2000, 800], help="generated films' height,width (default 2000,800)")
    p.add_argument("--models-dir", type=Path, help="default: SPINE_MODELS_DIR or exported_models/")
    p.add_argument("--hosts", type=_ints, default=[1, 2], help="worker host counts, one cluster each (default 1,2)")
    p.add_argument("--worker-cpus", type=int, default=2)
    p.add_argument("--actors", type=_ints, default=[0], help="actor counts, one run each (0: spine-batch's default)")
    p.add_argument("--loss", type=int, help="with 2+ hosts: ACTORS actors, once whole and once with host 2 killed mid-run")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    reason = unavailable_reason()
    if reason:
        print(f"cluster_bench: {reason}", file=sys.stderr)
        return 2
    # A SIGTERM unwinds like ^C, so the cluster's namespaces and processes are removed on the way out.
    signal.signal(signal.SIGTERM, signal.default_int_handler)

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="cluster-bench-") as tmp:
        root = Path(tmp)
        if args.data_dir:
            sources = [("data", linked_subset(args.data_dir, root / "films", args.limit))]
        else:
            height, width = args.size
            sources = [
                (f"{n} generated", generated_films(root / f"films-{n}", n, height=height, width=width)) for n in args.films
            ]
        # Generated films are not spines: the spine check would refuse every one (as in batch_bench).
        env = {} if args.data_dir else {"SPINE_SPINE_CHECK": "false"}
        for hosts in args.hosts:
            with NetnsCluster(workers=hosts, worker_cpus=args.worker_cpus, env=env) as cluster:
                for label, films in sources:
                    plans = [(actors, None) for actors in args.actors]
                    if args.loss and hosts >= 2 and films == sources[-1][1]:  # the largest archive only
                        plans += [] if args.loss in args.actors else [(args.loss, None)]
                        plans += [(args.loss, 2)]
                    for actors, kill in plans:
                        work = root / f"run-{len(runs)}"
                        work.mkdir()
                        run = cluster_run(cluster, films, work, args.models_dir, actors=actors, kill=kill)
                        run |= {"films": label, "worker_hosts": hosts, "worker_cpus": args.worker_cpus}
                        run |= {"actors": actors or "default", "host_killed": kill}
                        runs.append(run)
                        print(json.dumps(run), file=sys.stderr, flush=True)
    report = {"cpus": len(os.sched_getaffinity(0)), "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "runs": runs}
    if args.json:
        args.json.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
