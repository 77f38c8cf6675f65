"""AP `/classify` over HTTP with each measurement path: latency and the served `timings_ms` by stage.

    .venv/bin/python -m benchmarks.measurement_bench --films ../shared/data/aasce-train/images \
        --large ../shared/data/aasce-unlabelled --n 20 [--models exported_models] [--json out.json]

One live `spine-serve` per variant (SPINE_MEASUREMENT=landmarks, then mask), the same films in the same
order, one request at a time; prints a markdown table (medians and p90 of the wall time a client sees, and
of the server's `timings_ms` stages). Without --films a generated radiograph is used (figures then say so).
Speed is only compared within one run: these machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _generated_film() -> bytes:
    from benchmarks.http_bench import generated_radiograph

    return generated_radiograph(2900, 1100)


def _serve(models: Path, env_extra: dict[str, str]) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "SPINE_MODELS_DIR": str(models), "SPINE_PORT": str(port), "SPINE_HOST": "127.0.0.1", **env_extra}
    env.setdefault("SPINE_LOG_LEVEL", "warning")
    proc = subprocess.Popen([sys.executable, "-m", "service"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, f"http://127.0.0.1:{port}"


def _wait_ready(client, url: str, proc: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("the server exited during start-up")
        try:
            if client.get(f"{url}/health/ready").status_code == 200:
                return
        except Exception:  # not listening yet
            pass
        time.sleep(0.5)
    raise RuntimeError("the server did not become ready")


# What each variant sets: the served path, the landmark path without the ends model, the mask geometry.
VARIANTS = {
    "landmarks": {"SPINE_MEASUREMENT": "landmarks"},
    "landmarks_no_ends": {"SPINE_MEASUREMENT": "landmarks", "SPINE_ENDS_MODEL": "false"},
    "mask": {"SPINE_MEASUREMENT": "mask"},
}


def _run_variant(models: Path, variant: str, films: list[tuple[str, bytes]], large: list[tuple[str, bytes]]) -> dict:
    import httpx

    proc, url = _serve(models, {**VARIANTS[variant], "SPINE_SPINE_CHECK": "false"})
    try:
        with httpx.Client(timeout=120.0) as client:
            _wait_ready(client, url, proc)
            out = {}
            for group, items in (("ap", films), ("full_body", large)):
                if not items:
                    continue
                client.post(f"{url}/classify", files={"ap": items[0]})  # warm-up
                wall, stages = [], {}
                for name, data in items:
                    started = time.perf_counter()
                    response = client.post(f"{url}/classify", files={"ap": (name, data)})
                    wall.append((time.perf_counter() - started) * 1000)
                    if response.status_code != 200:
                        raise RuntimeError(f"{name}: {response.status_code} {response.text[:200]}")
                    for stage, ms in response.json().get("timings_ms", {}).items():
                        stages.setdefault(stage, []).append(ms)
                out[group] = {
                    "n": len(items),
                    "wall_ms_median": float(np.median(wall)),
                    "wall_ms_p90": float(np.percentile(wall, 90)),
                    **{f"{k}_ms_median": float(np.median(v)) for k, v in stages.items()},
                }
            return out
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _films(folder: Path | None, n: int) -> list[tuple[str, bytes]]:
    if folder is None:
        return []
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]
    return [(p.name, p.read_bytes()) for p in paths]


def table(results: dict) -> str:
    stages = ["wall_ms_median", "wall_ms_p90", "total_ms_median", "inference_ms_median", "landmark_inference_ms_median"]
    stages += ["tilt_inference_ms_median", "ends_inference_ms_median"]
    stages += ["measurement_ms_median", "classification_ms_median"]
    lines = ["| measurement | films | n | " + " | ".join(s.removesuffix("_median") for s in stages) + " |"]
    lines.append("|" + " --- |" * (len(stages) + 3))
    for variant, groups in results.items():
        for group, row in groups.items():
            cells = [f"{row[s]:.0f}" if s in row else "—" for s in stages]
            lines.append(f"| {variant} | {group} | {row['n']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--films", type=Path, default=None, help="folder of AP films (e.g. aasce-train/images)")
    parser.add_argument("--large", type=Path, default=None, help="folder of full-body films (aasce-unlabelled)")
    parser.add_argument("--n", type=int, default=20)
    parser.add_argument("--n-large", type=int, default=5)
    parser.add_argument("--models", type=Path, default=REPO / "exported_models")
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    films = _films(args.films, args.n) or [("generated.jpg", _generated_film())]
    large = _films(args.large, args.n_large)
    results = {variant: _run_variant(args.models, variant, films, large) for variant in args.variants}
    print(table(results))
    if args.films is None:
        print("(a generated radiograph: no --films given)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
