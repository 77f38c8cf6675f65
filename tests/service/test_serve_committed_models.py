"""The committed exported_models/ served as `spine-serve` would on a fresh clone (skipped until they exist)."""

from __future__ import annotations

import numpy as np
import pytest
from spine_service_testlib import decode_png_mask, encode, make_settings, post_segment, spine_image, start_client

from service.core.config import DEFAULT_MODELS_DIR

pytestmark = pytest.mark.skipif(
    not (DEFAULT_MODELS_DIR / "manifest.json").is_file(),
    reason=f"{DEFAULT_MODELS_DIR}/manifest.json is absent: the trained models are not committed yet",
)


def test_committed_models_serve_segment_and_classify() -> None:
    settings = make_settings(DEFAULT_MODELS_DIR, providers=["CUDAExecutionProvider", "CPUExecutionProvider"], intra_op_threads=2)
    client = start_client(settings)
    try:
        ready = client.get("/health/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["execution_provider"] in ("CUDAExecutionProvider", "CPUExecutionProvider")
        image = spine_image(900, 360, seed=11)
        for view in ("AP", "LAT"):
            r = post_segment(client, encode(image, "JPEG", quality=90), "x.jpg", view=view, overlay=True)
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["masks"] and all(decode_png_mask(m["data"]).shape == (900, 360) for m in body["masks"])
            assert body["overlay_png"]
        r = client.post(
            "/classify", files={"ap": ("a.png", encode(image), "image/png"), "lat": ("l.png", encode(image), "image/png")}
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["label"] in ("Normal", "Damaged") and 0 <= body["score"] <= 1
        assert all(np.isclose(p["p_normal"] + p["p_damaged"], 1, atol=1e-4) for p in body["per_mask"])
    finally:
        client.__exit__(None, None, None)
