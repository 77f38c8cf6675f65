"""Request ids, the one structured log line per request, and a crash turned into a JSON 500."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from spine_service_testlib import encode, make_settings, post_segment, spine_image

from service.core.logging import JsonFormatter
from service.main import create_app


def test_request_id_minted_echoed_or_replaced(client: TestClient) -> None:
    a, b = client.get("/health/live"), client.get("/health/live")
    assert a.headers["x-request-id"] != b.headers["x-request-id"] and len(a.headers["x-request-id"]) == 32
    assert client.get("/health/live", headers={"X-Request-ID": "gateway-42.a:b"}).headers["x-request-id"] == "gateway-42.a:b"
    bad = client.get("/health/live", headers={"X-Request-ID": "x" * 500})
    assert len(bad.headers["x-request-id"]) == 32
    err = post_segment(
        client,
        b"",
        view="AP",
    )
    assert err.json()["request_id"] == err.headers["x-request-id"]


def test_one_structured_log_line_per_request(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="service.access")
    caplog.clear()
    r = post_segment(client, encode(spine_image()), view="AP")
    lines = [rec for rec in caplog.records if rec.name == "service.access"]
    assert len(lines) == 1
    entry = json.loads(JsonFormatter().format(lines[0]))
    assert entry["request_id"] == r.headers["x-request-id"]
    assert entry["message"] == "request" and entry["level"] == "info"
    assert (entry["method"], entry["path"], entry["endpoint"], entry["status"]) == ("POST", "/segment", "/segment", 200)
    assert entry["duration_ms"] > 0 and entry["bytes_in"] > 0 and "ts" in entry


def test_an_internal_error_is_a_json_500_with_the_request_id(models_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(make_settings(models_dir))

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("bug")

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom")
        assert r.status_code == 500
        assert r.json()["code"] == "internal_error" and r.json()["request_id"] == r.headers["x-request-id"]
        assert client.get("/health/live").status_code == 200
    assert any(rec.exc_info and rec.levelno == logging.ERROR for rec in caplog.records)


def test_a_rejected_request_is_still_one_line_naming_the_error(client: TestClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    caplog.clear()
    r = post_segment(client, b"", view="AP")
    lines = [rec for rec in caplog.records if getattr(rec, "request_id", None) == r.headers["x-request-id"]]
    assert len(lines) == 1
    entry = json.loads(JsonFormatter().format(lines[0]))
    assert (entry["status"], entry["error"]) == (422, "empty_file")
