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
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- payloads


def _image(height: int, width: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.normal(60, 10, size=(height, width)) + np.linspace(0, 60, height)[:, None]
    cx = width // 2
    for i in range(6):
        top = int(height * 0.1 + i * height * 0.13)
        img[top : top + int(height * 0.08), cx - width // 6 : cx + width // 6] += 110
    return img.clip(0, 255).astype(np.uint8)


def _encode(array: np.ndarray, fmt: str, **kw: Any) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _dicom(array: np.ndarray, view: str) -> bytes:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ViewPosition, ds.PhotometricInterpretation = "DX", view, "MONOCHROME2"
    ds.Rows, ds.Columns = array.shape
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 16, 12, 11, 0
    ds.PixelData = (array.astype(np.uint16) * 16).tobytes()
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@dataclass
class Payloads:
    pngs: list[bytes]
    jpegs: list[bytes]
    dicoms: list[bytes]
    corrupt: bytes
    v2_model: str
    v2_body: bytes
    classify: bool


def make_payloads(seed: int, models: list[dict[str, Any]], scale: float) -> Payloads:
    """Varied sizes so the server's buffers see different shapes (a leak would show as RSS growth)."""
    rng = random.Random(seed)
    sizes = [(int(rng.randint(240, 900) * scale), int(rng.randint(100, 380) * scale)) for _ in range(12)]
    pngs = [_encode(_image(h, w, i), "PNG") for i, (h, w) in enumerate(sizes)]
    jpegs = [_encode(_image(h, w, 100 + i), "JPEG", quality=90) for i, (h, w) in enumerate(sizes)]
    dicoms = [_dicom(_image(h, w, 200 + i), "AP" if i % 2 else "LL") for i, (h, w) in enumerate(sizes[:6])]
    servable = {m["name"]: m for m in models if m["ready"]}
    if not servable:
        raise SystemExit("no servable model: see GET /health/ready")
    classify = any(m["kind"] == "classification" for m in servable.values()) and len(servable) == len(models)
    target = next((m for m in servable.values() if m["kind"] == "classification"), next(iter(servable.values())))
    shape = [1, *target["input_shape"][1:]]
    values = np.random.default_rng(seed).random(int(np.prod(shape)), dtype=np.float32)
    body = {"inputs": [{"name": target["input_name"], "datatype": "FP32", "shape": shape, "data": values.round(4).tolist()}]}
    return Payloads(pngs, jpegs, dicoms, pngs[0][: len(pngs[0]) // 2], target["name"], json.dumps(body).encode(), classify)


# --------------------------------------------------------------------------- the request mix


@dataclass
class Kind:
    name: str
    weight: int
    expect: int
    build: Callable[[Payloads, random.Random], dict[str, Any]]  # httpx.request kwargs


def _file(data: bytes, name: str) -> dict[str, tuple[str, bytes, str]]:
    return {"file": (name, data, "application/octet-stream")}


KINDS = [
    Kind("segment_png_ap", 20, 200, lambda p, r: {
        "method": "POST", "url": "/segment", "files": _file(r.choice(p.pngs), "a.png"), "data": {"view": "AP"}}),
    Kind("segment_jpeg_lat_rle", 14, 200, lambda p, r: {
        "method": "POST", "url": "/segment", "files": _file(r.choice(p.jpegs), "a.jpg"),
        "data": {"view": "LAT", "mask_format": "rle"}}),
    Kind("segment_overlay_subset", 6, 200, lambda p, r: {
        "method": "POST", "url": "/segment", "files": _file(r.choice(p.pngs), "a.png"),
        "data": {"view": "ap", "structures": "Ap_Vertebra", "overlay": "true"}}),
    Kind("segment_dicom", 6, 200, lambda p, r: {
        "method": "POST", "url": "/segment", "files": _file(r.choice(p.dicoms), "a.dcm"), "data": {}}),
    Kind("classify_ap_lat", 14, 200, lambda p, r: {
        "method": "POST", "url": "/classify",
        "files": {"ap": ("a.png", r.choice(p.pngs), "image/png"), "lat": ("b.jpg", r.choice(p.jpegs), "image/jpeg")},
        "data": {"include_masks": r.choice(["true", "false"])}}),
    Kind("v2_infer", 10, 200, lambda p, r: {
        "method": "POST", "url": f"/v2/models/{p.v2_model}/infer", "content": p.v2_body,
        "headers": {"content-type": "application/json"}}),
    Kind("health_ready", 6, 200, lambda p, r: {"method": "GET", "url": "/health/ready"}),
    Kind("models", 3, 200, lambda p, r: {"method": "GET", "url": "/models"}),
    Kind("metrics", 3, 200, lambda p, r: {"method": "GET", "url": "/metrics"}),
    Kind("bad_empty_file", 6, 422, lambda p, r: {
        "method": "POST", "url": "/segment", "files": _file(b"", "a.png"), "data": {"view": "AP"}}),
    Kind("bad_corrupt_png", 6, 422, lambda p, r: {
        "method": "POST", "url": "/segment", "files": _file(p.corrupt, "a.png"), "data": {"view": "AP"}}),
    Kind("bad_unknown_structure", 6, 422, lambda p, r: {
        "method": "POST", "url": "/segment", "files": _file(r.choice(p.pngs), "a.png"),
        "data": {"view": "AP", "structures": "Ap_Rib"}}),
]  # fmt: skip


def plan(n: int, seed: int, classify: bool) -> list[Kind]:
    kinds = [k for k in KINDS if classify or k.name != "classify_ap_lat"]
    rng = random.Random(seed)
    return rng.choices(kinds, weights=[k.weight for k in kinds], k=n)


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


# --------------------------------------------------------------------------- the run


@dataclass
class Result:
    index: int
    kind: str
    status: int | None  # None: no answer (transport error or timeout)
    expected: int
    seconds: float
    finished_at: float
    error: str | None = None
    shed: bool = False  # a 503 `overloaded` with Retry-After, accepted with --allow-overload

    @property
    def ok(self) -> bool:
        return self.status == self.expected or self.shed


@dataclass
class Run:
    results: list[Result] = field(default_factory=list)
    rss: list[tuple[int, int]] = field(default_factory=list)  # (requests completed, server RSS bytes)


def _check_body(kind: str, response: httpx.Response) -> str | None:
    """Beyond the status: the answer is what that endpoint promises (cheap checks)."""
    if response.status_code >= 400:
        body = response.json()
        return None if ("code" in body and body.get("request_id") == response.headers.get("x-request-id")) else "bad error body"
    if kind.startswith("segment"):
        body = response.json()
        if not body["masks"] or any(m["encoding"] not in ("png", "rle") for m in body["masks"]):
            return "no masks"
        if kind == "segment_overlay_subset" and not body["overlay_png"]:
            return "no overlay"
    elif kind == "classify_ap_lat":
        if response.json()["label"] not in ("Normal", "Damaged"):
            return "no label"
    elif kind == "v2_infer" and not response.json()["outputs"]:
        return "no outputs"
    return None


async def soak(
    base: str,
    pid: int,
    kinds: list[Kind],
    payloads: Payloads,
    concurrency: int,
    sample_every: int,
    seed: int,
    allow_overload: bool = False,
) -> Run:
    run = Run()
    process = psutil.Process(pid)
    queue: asyncio.Queue[tuple[int, Kind]] = asyncio.Queue()
    for item in enumerate(kinds):
        queue.put_nowait(item)
    completed = 0
    started = time.perf_counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:

        async def worker(wid: int) -> None:
            nonlocal completed
            rng = random.Random(seed * 1000 + wid)
            while True:
                try:
                    index, kind = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                t0 = time.perf_counter()
                status, error, shed = None, None, False
                try:
                    response = await client.request(**kind.build(payloads, rng))
                    status = response.status_code
                    # Only the admission 503 carries Retry-After (a not-ready 503 does not).
                    shed = allow_overload and status == 503 and "retry-after" in response.headers
                    if status == kind.expect:
                        error = _check_body(kind.name, response)
                        if error:
                            status = -1
                    else:
                        error = response.text[:200]
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"
                now = time.perf_counter()
                run.results.append(Result(index, kind.name, status, kind.expect, now - t0, now - started, error, shed))
                completed += 1
                if completed % sample_every == 0:
                    run.rss.append((completed, process.memory_info().rss))

        run.rss.append((0, process.memory_info().rss))
        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        run.rss.append((completed, process.memory_info().rss))
    return run


# --------------------------------------------------------------------------- the report


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


def _latency(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "p50_ms": round(_pct(ms, 50), 1),
        "p90_ms": round(_pct(ms, 90), 1),
        "p99_ms": round(_pct(ms, 99), 1),
        "max_ms": round(max(ms), 1) if ms else float("nan"),
        "mean_ms": round(statistics.fmean(ms), 1) if ms else float("nan"),
    }


def rss_at(rss: list[tuple[int, int]], n: int) -> int:
    """The RSS sample taken at (or first after) `n` completed requests."""
    return next((value for count, value in rss if count >= n), rss[-1][1])


def report(run: Run, args: argparse.Namespace, wall: float, server_counted: float, models: str) -> dict[str, Any]:
    results = sorted(run.results, key=lambda r: r.finished_at)
    failed = [r for r in results if not r.ok]
    lost = args.requests - len(results)
    windows = []
    size = max(1, args.window)
    for start in range(0, len(results), size):
        chunk = results[start : start + size]
        span = chunk[-1].finished_at - (results[start - 1].finished_at if start else 0.0)
        windows.append(
            {
                "requests": f"{start + 1}-{start + len(chunk)}",
                **_latency([r.seconds for r in chunk]),
                "req_per_s": round(len(chunk) / span, 1) if span > 0 else None,
                "failed": sum(not r.ok for r in chunk),
                "rss_mib": round(rss_at(run.rss, start + len(chunk)) / 2**20, 1),
            }
        )
    by_kind: dict[str, list[float]] = defaultdict(list)
    for r in results:
        by_kind[r.kind].append(r.seconds)
    baseline_at = min(args.rss_baseline, len(results))
    rss_base, rss_end = rss_at(run.rss, baseline_at), run.rss[-1][1]
    growth = (rss_end - rss_base) / rss_base * 100
    return {
        "models": models,
        "requests": args.requests,
        "concurrency": args.concurrency,
        "answered": len(results),
        "lost": lost,
        "failed": len(failed),
        "shed_503": sum(r.shed for r in results),
        "failures": [
            {"index": r.index, "kind": r.kind, "status": r.status, "expected": r.expected, "error": r.error} for r in failed[:20]
        ],
        "statuses": dict(sorted(Counter(str(r.status) for r in results).items())),
        "server_counted_requests": int(server_counted),
        "wall_s": round(wall, 1),
        "req_per_s": round(len(results) / wall, 1),
        "latency_all": _latency([r.seconds for r in results]),
        "latency_by_kind": {k: {"n": len(v), **_latency(v)} for k, v in sorted(by_kind.items())},
        "windows": windows,
        "rss": {
            "baseline_at_request": baseline_at,
            "baseline_mib": round(rss_base / 2**20, 1),
            "end_mib": round(rss_end / 2**20, 1),
            "peak_mib": round(max(v for _, v in run.rss) / 2**20, 1),
            "growth_pct": round(growth, 2),
            "max_growth_pct": args.max_rss_growth,
            "samples": [(n, round(v / 2**20, 1)) for n, v in run.rss],
        },
    }


def print_report(rep: dict[str, Any]) -> None:
    print(f"\nsoak: {rep['requests']} requests at concurrency {rep['concurrency']} on {rep['models']}")
    print(
        f"  answered {rep['answered']}, lost {rep['lost']}, failed {rep['failed']}, shed (503 overloaded) "
        f"{rep['shed_503']}; statuses {rep['statuses']}"
    )
    print(f"  server counted {rep['server_counted_requests']} requests; {rep['wall_s']} s, {rep['req_per_s']} req/s")
    rss = rep["rss"]
    print(
        f"  RSS {rss['baseline_mib']} MiB at request {rss['baseline_at_request']} -> {rss['end_mib']} MiB at the end "
        f"({rss['growth_pct']:+.2f} %, limit {rss['max_growth_pct']} %), peak {rss['peak_mib']} MiB"
    )
    print(f"  latency all: {rep['latency_all']}")
    print("\n  window          p50 ms   p90 ms   p99 ms   max ms   req/s  failed  RSS MiB")
    for w in rep["windows"]:
        print(
            f"  {w['requests']:<14} {w['p50_ms']:>7} {w['p90_ms']:>8} {w['p99_ms']:>8} {w['max_ms']:>8} "
            f"{w['req_per_s']!s:>7} {w['failed']:>7} {w['rss_mib']:>8}"
        )
    print("\n  kind                       n   p50 ms   p90 ms   p99 ms   max ms")
    for kind, v in rep["latency_by_kind"].items():
        print(f"  {kind:<22} {v['n']:>5} {v['p50_ms']:>8} {v['p90_ms']:>8} {v['p99_ms']:>8} {v['max_ms']:>8}")
    for f in rep["failures"]:
        print(f"  FAILED #{f['index']} {f['kind']}: {f['status']} (expected {f['expected']}) {f['error']}")


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
