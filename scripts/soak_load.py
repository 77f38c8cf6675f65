"""The load generator of scripts/soak.py: C async workers send the planned requests to the live server, check
each answer, and sample the server's RSS as the run goes."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil

if str(Path(__file__).resolve().parent) not in sys.path:  # the sibling soak_* modules, however this one is loaded
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from soak_requests import Kind, Payloads


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
