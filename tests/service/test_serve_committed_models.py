"""The committed exported_models/ served as `spine-serve` would on a fresh clone: what a client gets by default."""

from __future__ import annotations

import pytest
from spine_service_testlib import decode_png_mask, encode, make_settings, post_segment, spine_image, start_client

from service.core.config import DEFAULT_MODELS_DIR
from spine_core.manifest import load_manifest
from spine_engine import ModelRegistry

pytestmark = pytest.mark.skipif(
    not (DEFAULT_MODELS_DIR / "manifest.json").is_file(),
    reason=f"{DEFAULT_MODELS_DIR}/manifest.json is absent: the trained models are not committed yet",
)


@pytest.fixture(scope="module")
def committed(committed_registry: ModelRegistry):
    client = start_client(make_settings(DEFAULT_MODELS_DIR), committed_registry)
    try:
        yield client
    finally:
        client.__exit__(None, None, None)


def _validated() -> dict[str, bool]:
    return {e.structure: e.validated for e in load_manifest(DEFAULT_MODELS_DIR).segmentation_models()}


def test_ready_and_models_say_which_are_demonstrations(committed) -> None:
    ready = committed.get("/health/ready")
    assert ready.status_code == 200, ready.text
    served = {m["name"]: m["validated"] for m in committed.get("/models").json()["models"]}
    manifest = {e.name: e.validated for e in load_manifest(DEFAULT_MODELS_DIR).models}
    assert served == manifest
    assert served["Ap_Vertebra"] and not served["Ap_Pedicle"] and not served["Lat_Vertebra"]


def test_segment_runs_only_validated_models_by_default(committed) -> None:
    image = spine_image(900, 360, seed=11)
    body = post_segment(committed, encode(image, "JPEG", quality=90), "x.jpg", view="AP", overlay=True).json()
    validated = [s for s, ok in _validated().items() if ok and s.startswith("Ap_")]
    assert [m["structure"] for m in body["masks"]] == validated == [e["structure"] for e in body["legend"]]
    assert all(e["validated"] for e in body["legend"])
    assert {e["structure"] for e in body["excluded"]} == {"Ap_Pedicle", "Ap_Spinous_Process"}
    assert all(decode_png_mask(m["data"]).shape == (900, 360) for m in body["masks"]) and body["overlay_png"]
    assert not any("not validated" in w for w in body["warnings"])


def test_a_demonstration_model_runs_when_named_and_says_so(committed) -> None:
    image = spine_image(900, 360, seed=11)
    r = post_segment(committed, encode(image), "x.png", view="LAT")
    assert r.status_code == 422 and r.json()["code"] == "no_validated_model", r.text
    body = post_segment(committed, encode(image), "x.png", view="LAT", structures="Lat_Vertebra", overlay=True).json()
    assert [m["structure"] for m in body["masks"]] == ["Lat_Vertebra"]
    assert body["legend"] == [{"structure": "Lat_Vertebra", "color": body["legend"][0]["color"], "validated": False}]
    assert any("Lat_Vertebra is not validated" in w for w in body["warnings"])


def test_classify_lat_only_is_refused_and_ap_lat_is_decided_by_the_validated_model(committed, committed_registry) -> None:
    image = encode(spine_image(900, 360, seed=11))
    r = committed.post("/classify", files={"lat": ("l.png", image, "image/png")})
    assert r.status_code == 422 and r.json()["code"] == "no_validated_model"
    both = {"ap": ("a.png", image, "image/png"), "lat": ("l.png", image, "image/png")}
    r = committed.post("/classify", files=both)
    # The committed vertebra model finds no column of vertebrae on this synthetic film: no label, the reason instead.
    assert r.status_code == 422 and r.json()["code"] == "no_spine_found" and "label" not in r.json(), r.text
    unchecked = start_client(make_settings(DEFAULT_MODELS_DIR, spine_check=False), committed_registry)
    try:
        body = unchecked.post("/classify", files=both).json()
    finally:
        unchecked.__exit__(None, None, None)
    assert body["decided_by"] == ["Ap_Vertebra"] and body["aggregation"] == "mean", body
    assert [(p["structure"], p["decides"]) for p in body["per_mask"]] == [("Ap_Vertebra", True)]
    assert any(e["view"] == "LAT" and e["structure"] is None for e in body["excluded"])
    assert body["label"] == ("Damaged" if body["p_damaged"] >= body["threshold"] else "Normal")
