"""Inference runs off the event loop and one session per model is shared by concurrent requests."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from spine_service_testlib import CPU, decode_png_mask, encode, make_settings, serve_live, spine_image

from spine_engine import LoadedModel, ModelRegistry, Segmenter


def test_concurrent_requests_share_sessions_and_get_their_own_answers(live_server: str, registry: ModelRegistry) -> None:
    images = [spine_image(200 + 10 * i, 80 + 5 * i, seed=i) for i in range(8)]

    def call(img: np.ndarray) -> dict:
        r = httpx.post(
            f"http://{live_server}/segment", files={"file": ("a.png", encode(img), "image/png")}, data={"view": "LAT"}, timeout=30
        )
        assert r.status_code == 200, r.text
        return r.json()

    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(call, images))
    for img, body in zip(images, bodies, strict=True):
        expected = Segmenter(registry).segment(img, "LAT").masks
        for m in body["masks"]:
            np.testing.assert_array_equal(decode_png_mask(m["data"]), expected[m["structure"]])


class SlowRegistry(ModelRegistry):
    started = threading.Event()

    def infer(self, work: list[tuple[LoadedModel, np.ndarray]]) -> list[np.ndarray]:
        self.started.set()
        time.sleep(1.5)
        return super().infer(work)


def test_the_event_loop_stays_free_during_inference(models_dir: Path) -> None:
    base = ModelRegistry.load(models_dir, providers=CPU, intra_op_threads=1)
    slow = SlowRegistry(base.models_dir, base.manifest, base.models, base.problems, base.requested_providers)
    with serve_live(make_settings(models_dir), slow) as address, ThreadPoolExecutor(1) as pool:
        files = {"file": ("a.png", encode(spine_image()), "image/png")}
        pending = pool.submit(httpx.post, f"http://{address}/segment", files=files, data={"view": "AP"}, timeout=30)
        assert slow.started.wait(10)
        started = time.perf_counter()
        assert httpx.get(f"http://{address}/health/ready", timeout=5).status_code == 200
        assert time.perf_counter() - started < 0.5  # answered while the segmentation still sleeps
        assert pending.result().status_code == 200
