"""Section 3: end-to-end HTTP against a live `spine-serve` started here on 127.0.0.1 (a random port).

For each server variant (a set of SPINE_* environment settings) the server is started, timed to
readiness, and loaded with /segment (AP, LAT) and /classify (AP+LAT) at each concurrency with a
bounded number of requests. Peak RSS comes from /proc (VmHWM, reset per scenario through clear_refs,
plus sampling), CPU seconds per request from /proc/<pid>/stat. Starting the server and reading /proc:
benchmarks.server_process.
"""

from __future__ import annotations

import io
import json
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.server_process import RssSampler, Server, cpu_seconds, proc_status_bytes, reset_peak_rss, spine_serve
from benchmarks.timing import summarize

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA_DIR = REPO.parent / "shared" / "data"
SAMPLES = "course-samples"
SCENARIOS = ("segment_ap", "segment_lat", "classify_ap_lat")


@dataclass
class Study:
    label: str
    ap: bytes
    lat: bytes
    ap_name: str = "ap.jpg"
    lat_name: str = "lat.jpg"


@dataclass
class Images:
    studies: list[Study]
    source: str
    message: str = ""
    sizes: dict[str, list[int]] = field(default_factory=dict)


def generated_radiograph(height: int = 2900, width: int = 1950, seed: int = 0) -> bytes:
    """A JPEG shaped like the course samples (RGB, ~2900x1950): gradient, noise and a bright 'spine' column."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height, dtype=np.float32)[:, None]
    x = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    img = 60 + 40 * y + 120 * np.exp(-((x / 0.12) ** 2)) * (0.7 + 0.3 * np.sin(y * 80) ** 2)
    img = img + rng.normal(0, 8, (height, width)).astype(np.float32)
    gray = np.clip(img, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(np.repeat(gray[..., None], 3, axis=2)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def load_images(data_dir: Path | None = None) -> Images:
    """The course sample studies (Normal and Damaged, AP and LAT JPEGs), or one generated study."""
    from PIL import Image

    root = Path(data_dir or DEFAULT_DATA_DIR) / SAMPLES
    studies: list[Study] = []
    sizes: dict[str, list[int]] = {}
    if root.is_dir():
        for label in ("Normal", "Damaged"):
            ap = sorted((root / label / "AP").glob("*.jpg"))
            lat = sorted((root / label / "LAT").glob("*.jpg"))
            if ap and lat:
                studies.append(Study(label, ap[0].read_bytes(), lat[0].read_bytes(), ap[0].name, lat[0].name))
                for view, path in (("AP", ap[0]), ("LAT", lat[0])):
                    with Image.open(path) as im:
                        sizes[f"{label}/{view}/{path.name}"] = [im.width, im.height]
    if studies:
        return Images(studies, f"{root} ({len(studies)} studies)", sizes=sizes)
    message = (
        f"{root} not found: the HTTP section uses a GENERATED 2900x1950 JPEG instead of real radiographs "
        "(latency is comparable in size, masks are not meaningful)"
    )
    ap = generated_radiograph(seed=0)
    lat = generated_radiograph(2750, 1830, seed=1)
    return Images(
        [Study("generated", ap, lat)], "generated", message, {"generated/AP": [1950, 2900], "generated/LAT": [1830, 2750]}
    )


# --------------------------------------------------------------------------- load


def _request_args(scenario: str, study: Study) -> tuple[str, dict[str, Any], dict[str, Any]]:
    if scenario == "segment_ap":
        return "/segment", {"file": (study.ap_name, study.ap, "image/jpeg")}, {"view": "AP"}
    if scenario == "segment_lat":
        return "/segment", {"file": (study.lat_name, study.lat, "image/jpeg")}, {"view": "LAT"}
    if scenario == "classify_ap_lat":
        return "/classify", {"ap": (study.ap_name, study.ap, "image/jpeg"), "lat": (study.lat_name, study.lat, "image/jpeg")}, {}
    raise ValueError(scenario)


def run_load(server: Server, scenario: str, studies: list[Study], concurrency: int, requests: int) -> dict[str, Any]:
    """`requests` requests from `concurrency` client threads (keep-alive connections); latency per request."""
    import httpx

    lock = threading.Lock()
    next_index = [0]
    latencies: list[float] = []
    errors: list[str] = []
    server_timings: list[dict[str, float]] = []
    response_bytes: list[int] = []

    def worker() -> None:
        with httpx.Client(base_url=server.url, timeout=600.0) as client:
            while True:
                with lock:
                    i = next_index[0]
                    if i >= requests:
                        return
                    next_index[0] += 1
                path, files, data = _request_args(scenario, studies[i % len(studies)])
                t0 = time.perf_counter()
                try:
                    r = client.post(path, files=files, data=data)
                    content = r.content
                    elapsed = time.perf_counter() - t0
                    ok = r.status_code == 200
                    timings = json.loads(content).get("timings_ms") if ok else None
                except Exception as exc:  # connection reset, timeout...
                    elapsed, ok, timings, content = time.perf_counter() - t0, False, None, b""
                    r = None
                    err = f"{type(exc).__name__}: {exc}"
                with lock:
                    latencies.append(elapsed)
                    response_bytes.append(len(content))
                    if ok:
                        if timings:
                            server_timings.append(timings)
                    else:
                        errors.append(err if r is None else f"HTTP {r.status_code}: {content[:200]!r}")

    pid = server.pid
    hwm_reset = reset_peak_rss(pid)
    cpu0 = cpu_seconds(pid)
    client_cpu0 = time.process_time()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    with RssSampler(pid) as sampler:
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
    cpu1 = cpu_seconds(pid)
    client_cpu = time.process_time() - client_cpu0
    hwm = proc_status_bytes(pid, "VmHWM") if hwm_reset else None
    stages: dict[str, float] = {}
    for timing in server_timings:
        for k, v in timing.items():
            stages[k] = stages.get(k, 0.0) + v / len(server_timings)
    return {
        "scenario": scenario,
        "concurrency": concurrency,
        "requests": requests,
        "latency": summarize(latencies),
        "wall_s": wall,
        "requests_per_s": requests / wall,
        "errors": len(errors),
        "error_samples": errors[:3],
        "peak_rss_mib": max(hwm or 0, sampler.peak) / 2**20,
        "peak_rss_source": "VmHWM (reset per scenario) and 50 ms sampling" if hwm_reset else "50 ms sampling of VmRSS",
        "server_cpu_s_per_request": ((cpu1 - cpu0) / requests) if cpu0 is not None and cpu1 is not None else None,
        "client_cpu_s_per_request": client_cpu / requests,  # the load generator shares the machine's cores
        "server_timings_ms_mean": stages,
        "mean_response_kib": float(np.mean(response_bytes)) / 1024 if response_bytes else 0.0,
    }


@dataclass
class Variant:
    """One server configuration: SPINE_* settings, optionally the code of an earlier git commit."""

    name: str
    env: dict[str, str] = field(default_factory=dict)
    ref: str | None = None  # git ref whose service/ and spine_core/ are served instead of this tree's
    scenarios: tuple[str, ...] | None = None  # None: all
    concurrencies: tuple[int, ...] | None = None  # None: all


def export_ref(ref: str, dest: Path) -> tuple[Path, str]:
    """`git archive` the service and spine_core packages of `ref` into dest; returns (dest, full commit)."""
    commit = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--verify", f"{ref}^{{commit}}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", commit, "service", "spine_core"], capture_output=True, check=True
    )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest, commit


def run_http(
    models_dir: Path,
    images: Images,
    variants: list[Variant],
    concurrencies: tuple[int, ...],
    requests_for: dict[int, int],
    scenarios: tuple[str, ...] = SCENARIOS,
    warmup: int = 2,
    log_dir: Path | None = None,
    log=print,
) -> dict[str, Any]:
    import tempfile

    log_dir = log_dir or Path(tempfile.gettempdir()) / "spine-bench-logs"
    out: dict[str, Any] = {"images": images.source, "image_sizes": images.sizes, "message": images.message, "variants": {}}
    for v in variants:
        code_dir, commit = None, None
        tmp = None
        if v.ref:
            tmp = tempfile.TemporaryDirectory(prefix="spine-bench-ref-")
            code_dir, commit = export_ref(v.ref, Path(tmp.name))
        log(f"  server variant {v.name!r} {v.env or ''}{f' code of {commit[:10]}' if commit else ''}")
        try:
            variant = _run_variant(
                models_dir,
                images,
                v,
                code_dir,
                commit,
                v.concurrencies or concurrencies,
                # a variant's own scenarios, less those this manifest cannot serve (/classify without a classifier)
                tuple(x for x in (v.scenarios or scenarios) if x in scenarios) or scenarios,
                requests_for,
                warmup,
                log_dir,
                log,
            )
        finally:
            if tmp is not None:
                tmp.cleanup()
        out["variants"][v.name] = variant
    return out


def _run_variant(
    models_dir: Path,
    images: Images,
    v: Variant,
    code_dir: Path | None,
    commit: str | None,
    concurrencies: tuple[int, ...],
    scenarios: tuple[str, ...],
    requests_for: dict[int, int],
    warmup: int,
    log_dir: Path,
    log,
) -> dict[str, Any]:
    import httpx

    env = v.env
    with spine_serve(models_dir, env, log_dir, pythonpath=code_dir) as server:
        variant: dict[str, Any] = {
            "env": env,
            "code": f"git {commit}" if commit else "this working tree",
            "time_to_live_s": server.time_to_live_s,
            "time_to_ready_s": server.time_to_ready_s,
            "execution_provider": server.ready_body.get("execution_provider"),
            "requested_providers": server.ready_body.get("requested_providers"),
            "rss_after_ready_mib": (proc_status_bytes(server.pid, "VmRSS") or 0) / 2**20,
            "scenarios": {},
        }
        for scenario in scenarios:
            rows = {}
            run_load(server, scenario, images.studies, 1, warmup)  # first requests are slower (allocations)
            for c in concurrencies:
                rows[str(c)] = run_load(server, scenario, images.studies, c, requests_for[c])
                r = rows[str(c)]
                p50, rate = r["latency"]["median_ms"], r["requests_per_s"]
                log(f"    {scenario:16s} c={c:<3d} p50 {p50:8.1f} ms  {rate:6.2f} req/s  errors {r['errors']}")
            variant["scenarios"][scenario] = rows
        with httpx.Client(timeout=10) as client:
            variant["server_log_tail"] = server.log_path.read_text()[-1000:]
            variant["metrics_ok"] = client.get(server.url + "/metrics").status_code == 200
            variant["precision_served"] = _precision_served(client, server.url)
    return variant


def _precision_served(client, url: str) -> dict[str, str | None]:
    """Per model, the precision GET /models says is served (None: code from before the field existed)."""
    import httpx

    try:
        r = client.get(url + "/models")
        return {m["name"]: m.get("precision") for m in r.json()["models"]} if r.status_code == 200 else {}
    except (httpx.HTTPError, ValueError, KeyError, TypeError):  # an older server's /models: not worth failing over
        return {}
