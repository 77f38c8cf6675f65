"""A live `spine-serve` for the HTTP section: started on 127.0.0.1 (a random port), timed to readiness, and
its RSS and CPU seconds read from /proc while the load runs (benchmarks.http_bench)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.timing import PeriodicSampler

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status_bytes(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime
    except (OSError, ValueError, IndexError):
        return None


def reset_peak_rss(pid: int) -> bool:
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


class RssSampler(PeriodicSampler):
    """Max RSS of a process sampled every `interval` seconds (a fallback and cross-check for VmHWM)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        super().__init__(interval, "rss-sampler")
        self.pid, self.peak = pid, 0

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = proc_status_bytes(self.pid, "VmRSS")
            if rss:
                self.peak = max(self.peak, rss)
            self._stop.wait(self.interval)


@dataclass
class Server:
    url: str
    pid: int
    process: subprocess.Popen
    time_to_live_s: float | None
    time_to_ready_s: float
    ready_body: dict[str, Any]
    log_path: Path


def _serve_command(pythonpath: Path | None = None) -> list[str]:
    if pythonpath is not None:  # another checkout of the code: its `service` package, this interpreter
        return [sys.executable, "-m", "service"]
    script = Path(sys.executable).parent / "spine-serve"
    if script.exists():
        return [str(script)]
    found = shutil.which("spine-serve")
    return [found] if found else [sys.executable, "-m", "service"]


@contextmanager
def spine_serve(
    models_dir: Path, env: dict[str, str], log_dir: Path, timeout: float = 300.0, pythonpath: Path | None = None
) -> Iterator[Server]:
    """Start spine-serve on 127.0.0.1:<random port> with SPINE_* settings; yield once /health/ready says 200.

    `pythonpath`: serve the code of another tree (e.g. a `git archive` of an earlier commit) instead of this one.
    """
    import httpx

    port = _free_port()
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("SPINE_")}
    full_env.update(
        {
            "SPINE_HOST": "127.0.0.1",
            "SPINE_PORT": str(port),
            "SPINE_MODELS_DIR": str(models_dir),
            "SPINE_LOG_LEVEL": "warning",
            "SPINE_LOG_JSON": "true",
            # The timed workload: every U-Net of both views, on films that need not be spines (see pipeline_bench).
            "SPINE_DEMONSTRATION_MODELS": "true",
            "SPINE_DEMONSTRATION_MODELS_DECIDE": "true",
            "SPINE_SPINE_CHECK": "false",
        }
    )
    full_env.update(env)
    if pythonpath is not None:
        full_env["PYTHONPATH"] = str(pythonpath)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"spine-serve-{port}.log"
    url = f"http://127.0.0.1:{port}"
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            _serve_command(pythonpath), env=full_env, stdout=log, stderr=subprocess.STDOUT, cwd=str(pythonpath or REPO)
        )
    try:
        live_at: float | None = None
        body: dict[str, Any] = {}
        with httpx.Client(timeout=5.0) as client:
            while True:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"spine-serve exited with {process.returncode}; log: {log_path}\n{log_path.read_text()[-2000:]}"
                    )
                if time.perf_counter() - started > timeout:
                    raise RuntimeError(f"spine-serve not ready after {timeout:.0f} s: {body}; log: {log_path}")
                try:
                    if live_at is None and client.get(url + "/health/live").status_code == 200:
                        live_at = time.perf_counter() - started
                    r = client.get(url + "/health/ready")
                    body = r.json()
                    if r.status_code == 200:
                        break
                    if body.get("status") == "not_ready":
                        raise RuntimeError(f"spine-serve is up but not ready: {body.get('reasons')}")
                except httpx.TransportError:
                    pass
                time.sleep(0.05)
        ready_s = time.perf_counter() - started
        yield Server(url, process.pid, process, live_at, ready_s, body, log_path)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
