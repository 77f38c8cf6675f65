"""create_app, the spine-serve entry point, and the OpenAPI contract (stable operation ids, examples)."""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

import service.__main__ as entry

OPERATION_IDS = {
    "health_live",
    "health_ready",
    "list_models",
    "segment",
    "classify",
    "dicom_seg",
    "dicom_sr",
    "dicomweb_analyze",
    "metrics",
    "save_annotation",
    "list_annotations",
    "get_annotation",
    "reload_models",
    "v2_server_metadata",
    "v2_server_live",
    "v2_server_ready",
    "v2_model_metadata",
    "v2_model_version_metadata",
    "v2_model_ready",
    "v2_model_version_ready",
    "v2_model_config",
    "v2_model_version_config",
    "v2_model_infer",
    "v2_model_version_infer",
}


def test_spine_serve_console_script() -> None:
    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "spine-serve"]
    assert ep.value == "service.__main__:main"


def test_main_runs_uvicorn_with_the_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen = {}
    monkeypatch.setattr(entry.uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    monkeypatch.setenv("SPINE_PORT", "9123")
    monkeypatch.setenv("SPINE_PROVIDERS", "CPUExecutionProvider")
    entry.main(["--models-dir", str(tmp_path), "--host", "127.0.0.1"])
    assert isinstance(seen["app"], FastAPI)
    assert (seen["host"], seen["port"]) == ("127.0.0.1", 9123)
    assert seen["app"].state.settings.models_dir == tmp_path
    assert seen["log_config"] is None and seen["access_log"] is False


def test_openapi_contract(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    ops = {op["operationId"]: op for path in spec["paths"].values() for op in path.values()}
    assert set(ops) == OPERATION_IDS
    segment = ops["segment"]
    form = segment["requestBody"]["content"]["multipart/form-data"]["schema"]
    form = spec["components"]["schemas"][form["$ref"].rsplit("/", 1)[1]] if "$ref" in form else form
    assert {"file", "view", "structures", "mask_format", "overlay"} <= set(form["properties"])
    assert form["required"] == ["file"]
    schemas = spec["components"]["schemas"]
    assert schemas["SegmentResponse"]["examples"] and schemas["ClassifyResponse"]["examples"]
    assert {"413", "415", "422", "503"} <= set(segment["responses"])
    assert client.get("/docs").status_code == 200
