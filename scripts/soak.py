#!/usr/bin/env python3
"""Load and soak test: a live `spine-serve` on 127.0.0.1, N mixed requests at concurrency C (httpx async).

Starts `python -m service` (what the `spine-serve` console script runs) on a free loopback port, waits for
readiness, then sends a fixed mix of requests (segment PNG/JPEG/DICOM with png/rle masks and overlays, classify,
KServe v2 infer, health/models/metrics probes, and bad inputs that must be 4xx) and checks every answer against
the status it must have. Reports: lost or failed requests (must be 0), the server's RSS from request 1,000 to the
end (growth must stay under --max-rss-growth, 5 % by default), latency percentiles per window of requests and
per kind, throughput, and the server's own request counter as a cross-check. Exit status 1 when any check fails.

    python scripts/soak.py --tiny                             # the full run: 10,000 requests, concurrency 16
    python scripts/soak.py --tiny --requests 400 --short      # CI's short mode (no RSS verdict)
    python scripts/soak.py --models-dir exported_models --requests 500   # the committed models (slow on CPU)

`--tiny` builds the test suite's tiny ONNX models (tests/service/spine_service_testlib.py; needs the dev extra)
in a temporary folder: the real U-Nets take seconds per image on a small CPU, too slow for 10,000 requests.

This file runs the server and the checks; the request mix is in soak_requests.py, the load generator in
soak_load.py, the report and its table in soak_report.py (beside it).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "scripts") not in sys.path:  # the sibling soak_* modules, also when loaded by load_script()
    sys.path.insert(0, str(REPO / "scripts"))

from soak_load import soak  # noqa: E402
from soak_report import print_report, report  # noqa: E402
from soak_requests import make_payloads, plan  # noqa: E402

# --------------------------------------------------------------------------- the server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def spine_serve(models_dir: Path, log_path: Path, env_extra: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPINE_")}
    env.update({"SPINE_MODELS_DIR": str(models_dir), "SPINE_LOG_LEVEL": "warning", "SPINE_LOG_JSON": "true"})
    env.update(env_extra)
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(port)],
            cwd=str(log_path.parent),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"spine-serve exited ({proc.returncode}):\n{log_path.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError, ValueError):
                r = httpx.get(f"{base}/health/ready", timeout=2)
                if r.json().get("status") != "loading":
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("spine-serve did not finish loading in 600 s")
            time.sleep(0.2)
        yield base, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def server_request_count(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=10).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("spine_http_requests_total{"))


def tiny_models(folder: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests" / "service"))
    from spine_service_testlib import write_models_dir  # the test suite's tiny ONNX models (dev extra: onnx)

    return write_models_dir(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--models-dir", type=Path, default=REPO / "exported_models")
    parser.add_argument("--tiny", action="store_true", help="serve the test suite's tiny ONNX models instead")
    parser.add_argument("--window", type=int, default=1000, help="requests per latency window")
    parser.add_argument("--rss-baseline", type=int, default=1000, help="RSS growth is measured from this request on")
    parser.add_argument("--max-rss-growth", type=float, default=5.0, help="percent; the run fails beyond")
    parser.add_argument("--short", action="store_true", help="CI mode: report the RSS growth but do not judge it")
    parser.add_argument("--image-scale", type=float, default=1.0, help="scale of the generated radiographs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--allow-overload", action="store_true", help="count a 503 `overloaded` with Retry-After as shed, not failed"
    )
    parser.add_argument("--report", type=Path, help="write the JSON report here")
    parser.add_argument("--env", action="append", default=[], metavar="SPINE_X=V", help="extra server setting (repeatable)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="spine-soak-") as tmp:
        models_dir = tiny_models(Path(tmp) / "models") if args.tiny else args.models_dir.resolve()  # server cwd is tmp
        env = {"SPINE_PROVIDERS": os.environ.get("SPINE_PROVIDERS", "CPUExecutionProvider,CUDAExecutionProvider")}
        env.update(dict(item.split("=", 1) for item in args.env))
        log_path = Path(tmp) / "serve.log"
        with spine_serve(models_dir, log_path, env) as (base, proc):
            models = httpx.get(f"{base}/models", timeout=30).json()["models"]
            payloads = make_payloads(args.seed, models, args.image_scale)
            kinds = plan(args.requests, args.seed, payloads.classify)
            before = server_request_count(base)
            t0 = time.perf_counter()
            sample_every = max(1, args.requests // 100)
            run = asyncio.run(
                soak(base, proc.pid, kinds, payloads, args.concurrency, sample_every, args.seed, args.allow_overload)
            )
            wall = time.perf_counter() - t0
            counted = server_request_count(base) - before - 1  # minus the /metrics read that measured `before`
        exit_code = proc.returncode
        errors = [line for line in log_path.read_text().splitlines() if '"level": "error"' in line]
        label = "tiny test models" if args.tiny else str(args.models_dir)
        rep = report(run, args, wall, counted, label)
        rep["server_error_log_lines"] = len(errors)
        rep["server_exit_code"] = exit_code
        print_report(rep)
        print(f"  server: {len(errors)} error log lines, exit code {exit_code} after SIGTERM")
    if args.report:
        args.report.write_text(json.dumps(rep, indent=2))
    problems = []
    if rep["lost"] or rep["failed"]:
        problems.append(f"{rep['lost']} lost and {rep['failed']} failed requests")
    if int(rep["server_counted_requests"]) != rep["answered"]:
        problems.append(f"the server counted {rep['server_counted_requests']} requests, the client {rep['answered']}")
    if rep["server_error_log_lines"]:
        problems.append(f"{rep['server_error_log_lines']} error lines in the server log")
    if not args.short and rep["rss"]["growth_pct"] > args.max_rss_growth:
        problems.append(f"RSS grew {rep['rss']['growth_pct']} % (limit {args.max_rss_growth} %)")
    for p in problems:
        print(f"FAIL: {p}")
    if not problems:
        print("PASS")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
