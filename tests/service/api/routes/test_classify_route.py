"""POST /classify: per-mask scores, the aggregation rule, masks on request."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient
from spine_service_testlib import decode_png_mask, encode, spine_image

from spine_core.structures import CLASSIFIER_MODEL_NAME, structures_for_view
from spine_engine import ModelRegistry, Segmenter, aggregate_max_score, aggregate_mean


def _files(**views: bytes) -> dict:
    return {name: (f"{name}.png", data, "image/png") for name, data in views.items()}


def test_ap_and_lat(client: TestClient, registry: ModelRegistry) -> None:
    ap, lat = spine_image(300, 120, seed=1), spine_image(280, 140, seed=2)
    r = client.post("/classify", files=_files(ap=encode(ap), lat=encode(lat)))
    assert r.status_code == 200, r.text
    body = r.json()
    structures = structures_for_view("AP") + structures_for_view("LAT")
    assert [p["structure"] for p in body["per_mask"]] == structures
    assert {p["view"] for p in body["per_mask"]} == {"AP", "LAT"}
    per_mask = {p["structure"]: (p["p_normal"], p["p_damaged"]) for p in body["per_mask"]}
    # The same numbers as the inference layer: segment each view, score every model-frame mask at once.
    frames = {
        **Segmenter(registry).segment(ap, "AP").model_frame_masks,
        **Segmenter(registry).segment(lat, "LAT").model_frame_masks,
    }
    expected = Segmenter(registry).classify_masks(frames)
    for s in structures:
        assert per_mask[s] == pytest.approx(expected[s], abs=1e-5)
    label, score = aggregate_mean(per_mask)  # the default rule; these test models are all validated, uncalibrated
    assert (body["label"], body["aggregation"]) == (label, "mean") and body["score"] == pytest.approx(score, abs=1e-5)
    assert body["decided_by"] == structures and body["threshold"] == 0.5 and body["excluded"] == []
    assert body["rules"]["max_score"]["label"] == aggregate_max_score(per_mask)[0]
    assert all(p["decides"] and p["validated"] and p["p_damaged"] == p["p_damaged_raw"] for p in body["per_mask"])
    assert [v["view"] for v in body["views"]] == ["AP", "LAT"]
    ap_view = body["views"][0]
    assert (ap_view["width"], ap_view["height"]) == (120, 300)
    assert decode_png_mask(ap_view["masks"][0]["data"]).shape == (300, 120)
    names = [m["name"] for m in body["models"]]
    assert names[-1] == CLASSIFIER_MODEL_NAME and set(names[:-1]) == set(structures)
    assert body["execution_provider"] == "CPUExecutionProvider"
    assert {"decode", "preprocess", "inference", "postprocess", "classification"} <= set(body["timings_ms"])


def test_one_view_mean_rule_and_no_masks(client: TestClient) -> None:
    r = client.post("/classify", files=_files(lat=encode(spine_image())), data={"include_masks": "false", "aggregation": "mean"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["aggregation"] == "mean"
    assert [p["view"] for p in body["per_mask"]] == ["LAT"] * 5
    label, score = aggregate_mean({p["structure"]: (p["p_normal"], p["p_damaged"]) for p in body["per_mask"]})
    assert body["label"] == label and body["score"] == pytest.approx(score, abs=1e-5)
    assert body["views"] == [{"view": "LAT", "width": 120, "height": 300, "format": "PNG", "masks": []}]


def test_rle_masks(client: TestClient) -> None:
    body = client.post("/classify", files=_files(ap=encode(spine_image())), data={"mask_format": "rle"}).json()
    masks = body["views"][0]["masks"]
    assert all(m["encoding"] == "rle" and m["data"]["size"] == [300, 120] for m in masks)
    assert sum(np.sum(m["data"]["counts"]) for m in masks) == 3 * 300 * 120


def test_without_masks_the_scores_are_the_same(client: TestClient) -> None:
    # include_masks=false skips resizing the masks to the original size; the classifier never needed it.
    files = _files(ap=encode(spine_image(300, 120, seed=3)), lat=encode(spine_image(280, 140, seed=4)))
    with_masks = client.post("/classify", files=files).json()
    without = client.post("/classify", files=files, data={"include_masks": "false"}).json()
    assert without["per_mask"] == with_masks["per_mask"]
    assert (without["label"], without["score"]) == (with_masks["label"], with_masks["score"])
    assert all(v["masks"] == [] for v in without["views"]) and all(v["masks"] for v in with_masks["views"])
