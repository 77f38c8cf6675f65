"""Liveness, readiness and the not-ready paths over HTTP: the service starts, says why, serves nothing wrong."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from spine_service_testlib import copy_models_dir, encode, make_settings, post_segment, spine_image, start_client

from service.main import create_app

GOOD = encode(spine_image())


@pytest.fixture
def make_client() -> Iterator:
    clients: list[TestClient] = []

    def make(models_dir: Path, **overrides: object) -> TestClient:
        clients.append(start_client(make_settings(models_dir, **overrides)))
        return clients[-1]

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def test_live_and_ready(client: TestClient) -> None:
    assert client.get("/health/live").json() == {"status": "alive"}
    r = client.get("/health/ready")
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "ready" and body["ready"] is True
    assert body["execution_provider"] == "CPUExecutionProvider"
    assert body["models_ready"] == body["models_total"] == 9 and body["reasons"] == {}


def test_missing_model_file(tmp_path: Path, models_dir: Path, make_client) -> None:
    d = copy_models_dir(models_dir, tmp_path / "m")
    (d / "Lat_Disk_Height/1/model.onnx").unlink()
    client = make_client(d)
    r = client.get("/health/ready")
    assert r.status_code == 503
    body = r.json()
    assert body["status"] == "not_ready" and body["models_ready"] == 8
    assert "is missing" in body["reasons"]["Lat_Disk_Height"]
    # The view that needs it is refused, naming the model; the other view is served.
    r = post_segment(client, GOOD, view="LAT")
    assert r.status_code == 503 and r.json()["code"] == "model_unavailable" and "Lat_Disk_Height" in r.json()["detail"]
    assert post_segment(client, GOOD, view="LAT", structures="Lat_Vertebra").status_code == 200
    assert post_segment(client, GOOD, view="AP").status_code == 200
    assert client.post("/classify", files={"lat": ("a.png", GOOD, "image/png")}).status_code == 503
    models = {m["name"]: m for m in client.get("/models").json()["models"]}
    assert models["Lat_Disk_Height"]["ready"] is False and "missing" in models["Lat_Disk_Height"]["problem"]


def test_sha_mismatch_and_corrupt_file(tmp_path: Path, models_dir: Path, make_client) -> None:
    d = copy_models_dir(models_dir, tmp_path / "m")
    manifest = json.loads((d / "manifest.json").read_text())
    for m in manifest["models"]:
        if m["name"] == "Ap_Pedicle":
            m["sha256"] = "f" * 64
    (d / "manifest.json").write_text(json.dumps(manifest))
    (d / "Mask_Classifier/1/model.onnx").write_bytes(b"garbage")
    body = make_client(d).get("/health/ready").json()
    assert set(body["reasons"]) == {"Ap_Pedicle", "Mask_Classifier"}
    assert "sha256" in body["reasons"]["Ap_Pedicle"] and "sha256" in body["reasons"]["Mask_Classifier"]
    corrupt = make_client(d, verify_sha256=False).get("/health/ready").json()
    assert "cannot be loaded by onnxruntime" in corrupt["reasons"]["Mask_Classifier"]


def test_require_gpu_on_cpu(models_dir: Path, make_client) -> None:
    client = make_client(models_dir, require_gpu=True)
    r = client.get("/health/ready")
    assert r.status_code == 503
    body = r.json()
    assert body["require_gpu"] is True and body["execution_provider"] == "CPUExecutionProvider"
    assert all("require_gpu" in why for why in body["reasons"].values()) and len(body["reasons"]) == 9
    assert post_segment(client, GOOD, view="AP").status_code == 503


def test_no_manifest(tmp_path: Path, make_client) -> None:
    client = make_client(tmp_path)
    body = client.get("/health/ready").json()
    assert body["status"] == "not_ready" and "manifest.json not found" in body["reasons"]["manifest"]
    assert post_segment(client, GOOD, view="AP").status_code == 503
    assert client.get("/health/live").status_code == 200


def test_loading(models_dir: Path) -> None:
    # Without its lifespan the app never starts loading: exactly what a probe sees during start-up.
    client = TestClient(create_app(make_settings(models_dir)))
    r = client.get("/health/ready")
    assert r.status_code == 503 and r.json()["status"] == "loading"
    r = post_segment(client, GOOD, view="AP")
    assert r.status_code == 503 and r.json()["code"] == "loading"
    assert client.get("/health/live").status_code == 200
