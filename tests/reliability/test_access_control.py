"""Issue 6, access control: optional API keys (constant-time), CORS closed by default, no upload on disk,
request ids and no image data in the logs."""

from __future__ import annotations

import base64
import hmac
import io
import json
import logging
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, PngImagePlugin
from spine_reliability_testlib import encode, make_dicom, make_settings, spine_image, start_client, write_models_dir
from starlette.formparsers import MultiPartParser

import service.core.security
from service.core.config import Settings
from service.core.logging import JsonFormatter
from service.main import create_app

KEYS = ["k-first-0123456789", "k-second-abcdefghij"]
GOOD = encode(spine_image())
EXEMPT = {"/health/live", "/v2/health/live"}
# The viewer's shell, its static files and the API documentation: public (GET/HEAD), they carry no data.
PAGE_ASSETS = [
    "/",
    "/static/viewer/viewer.js",
    "/static/viewer/apikey.js",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/openapi.json",
]


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_models_dir(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def keyed(models_dir: Path) -> Iterator[TestClient]:
    c = start_client(make_settings(models_dir, api_keys=",".join(KEYS)))
    try:
        yield c
    finally:
        c.__exit__(None, None, None)


@pytest.fixture(scope="module")
def open_client(models_dir: Path) -> Iterator[TestClient]:
    c = start_client(make_settings(models_dir))
    try:
        yield c
    finally:
        c.__exit__(None, None, None)


def _operations(client: TestClient, headers: dict[str, str]) -> list[tuple[str, str]]:
    spec = client.get("/openapi.json", headers=headers).json()
    ops = []
    for path, methods in spec["paths"].items():
        concrete = path.replace("{name}", "Ap_Vertebra").replace("{model_version}", "1")
        ops += [(method.upper(), concrete) for method in methods]
    return ops


# --------------------------------------------------------------------------- API keys


def test_settings_parse_keys_and_never_show_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINE_API_KEYS", f" {KEYS[0]} ,{KEYS[1]},, ")
    s = Settings(_env_file=None)
    assert [k.get_secret_value() for k in s.api_keys] == KEYS
    assert KEYS[0] not in repr(s) and KEYS[0] not in str(s.model_dump())
    assert Settings(_env_file=None, api_keys="").api_keys == []


def test_every_operation_but_liveness_needs_a_key(keyed: TestClient) -> None:
    ops = _operations(keyed, {"X-API-Key": KEYS[0]})
    assert len(ops) == 24  # 20 + POST/GET /annotations, GET /annotations/{study_id}, POST /models/reload
    for method, path in ops:
        r = keyed.request(method, path)
        if path in EXEMPT:
            assert r.status_code == 200, (path, r.text)
            continue
        assert r.status_code == 401, (method, path, r.status_code)
        assert r.headers["www-authenticate"].startswith("Bearer")
        body = r.json()
        if path.startswith("/v2"):
            assert "API key" in body["error"]
        else:
            assert body["code"] == "unauthorized" and body["request_id"] == r.headers["x-request-id"]
    for path in ("/metrics", "/nonexistent", "/static", "/staticx/a", "/docsx", "/openapi.json/x", "/health/ready", "/models"):
        assert keyed.get(path).status_code == 401, path
    # Helpers of the page that are not in the document need a key too.
    r = keyed.post("/viewer/preview", files={"file": ("a.png", GOOD, "image/png")})
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"


def test_page_assets_are_served_without_a_key(keyed: TestClient) -> None:
    for path in PAGE_ASSETS:
        r = keyed.get(path)
        assert r.status_code == 200, (path, r.status_code)
        assert keyed.head(path).status_code != 401, path  # past the key check (FastAPI routes may not answer HEAD)
    assert 'data-testid="api-key"' in keyed.get("/").text
    # The public document describes the API (its examples come from the repository), not this deployment's models.
    served = keyed.get("/models", headers={"X-API-Key": KEYS[0]}).json()["models"]
    document = keyed.get("/openapi.json").text
    assert served and not [m["sha256"] for m in served if m["sha256"] in document]
    assert keyed.get("/static/viewer/none.js").status_code == 404  # public, but only what is there
    # Only reads: any other method on the same paths is checked like an operation.
    for method, path in (("POST", "/"), ("POST", "/openapi.json"), ("PUT", "/static/viewer/viewer.js"), ("DELETE", "/docs")):
        assert keyed.request(method, path).status_code == 401, (method, path)


def _raw_get(app: object, path: str) -> tuple[int, bytes]:
    """One GET with the path exactly as sent (an HTTP client would resolve `..` before sending)."""
    import anyio

    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    anyio.run(app, scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


@pytest.mark.parametrize("path", ["/static/../models", "/static/..%2Fmodels", "/static/../../health/ready", "/static//models"])
def test_the_static_prefix_reaches_no_operation(models_dir: Path, path: str) -> None:
    # Exempt by its prefix, such a path is still routed to the static files, which refuse to leave their folder.
    status, body = _raw_get(create_app(make_settings(models_dir, api_keys=KEYS[0])), path)
    assert status == 404, (path, status, body[:200])
    assert b"Ap_Vertebra" not in body and b"ready" not in body


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({"X-API-Key": KEYS[0]}, 200),
        ({"X-API-Key": KEYS[1]}, 200),
        ({"Authorization": f"Bearer {KEYS[0]}"}, 200),
        ({"Authorization": f"bearer {KEYS[1]}"}, 200),
        ({"X-API-Key": "wrong", "Authorization": f"Bearer {KEYS[1]}"}, 200),  # any valid credential
        ({"X-API-Key": KEYS[0][:-1]}, 401),
        ({"X-API-Key": KEYS[0] + "x"}, 401),
        ({"X-API-Key": ""}, 401),
        ({"Authorization": f"Basic {KEYS[0]}"}, 401),
        ({"Authorization": "Bearer"}, 401),
        ({"Authorization": KEYS[0]}, 401),
        ({"X-Api-Key-Other": KEYS[0]}, 401),
    ],
)
def test_key_forms(keyed: TestClient, headers: dict[str, str], status: int) -> None:
    r = keyed.post("/segment", files={"file": ("a.png", GOOD, "image/png")}, data={"view": "AP"}, headers=headers)
    assert r.status_code == status, r.text[:200]


def test_keys_are_compared_in_constant_time_against_every_key(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    compare = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(service.core.security.hmac, "compare_digest", spy)
    checker = service.core.security.ApiKeyChecker(KEYS)
    for presented, ok in ((KEYS[0].encode(), True), (KEYS[1].encode(), True), (b"nope", False), (b"x" * 10_000, False)):
        calls.clear()
        assert checker.check([presented]) is ok
        # every key compared, whichever matched (no early exit), and always fixed-length digests (no length leak)
        assert len(calls) == len(KEYS)
        assert all(len(a) == len(b) == 32 for a, b in calls)


def test_a_request_without_a_key_is_refused_before_its_body_is_read(models_dir: Path) -> None:
    import anyio

    app = create_app(make_settings(models_dir, api_keys=KEYS[0]))
    sent: list[dict] = []

    async def receive() -> dict:
        raise AssertionError("the body was read")

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/segment",
        "raw_path": b"/segment",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"multipart/form-data; boundary=b"), (b"content-length", b"10000000")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    anyio.run(app, scope, receive, send)
    assert sent[0]["status"] == 401


def test_openapi_describes_the_keys(keyed: TestClient, open_client: TestClient) -> None:
    spec = keyed.get("/openapi.json", headers={"Authorization": f"Bearer {KEYS[0]}"}).json()
    assert set(spec["components"]["securitySchemes"]) == {"ApiKeyHeader", "BearerKey"}
    assert KEYS[0] not in json.dumps(spec)
    for path, methods in spec["paths"].items():
        for op in methods.values():
            assert ("security" in op) == (path not in EXEMPT), path
            assert ("401" in op["responses"]) == (path not in EXEMPT), path
    # No documented operation is a public page asset: the document's security description holds for all of them.
    assert not [p for p in spec["paths"] if service.core.security.is_public_page_asset("GET", p)]
    assert "/openapi.json" not in spec["paths"] and "/" not in spec["paths"]
    plain = open_client.get("/openapi.json").json()
    assert "securitySchemes" not in plain.get("components", {})
    assert not any("401" in op["responses"] for m in plain["paths"].values() for op in m.values())


def test_exempt_paths_are_configurable(models_dir: Path) -> None:
    c = start_client(make_settings(models_dir, api_keys=KEYS[0], auth_exempt_paths="/health/live,/health/ready,/metrics"))
    try:
        assert c.get("/health/ready").status_code == 200 and c.get("/metrics").status_code == 200
        assert c.get("/v2/health/live").status_code == 401  # replaced, not added to
        assert c.get("/models").status_code == 401
    finally:
        c.__exit__(None, None, None)


# --------------------------------------------------------------------------- CORS


def test_cors_is_closed_by_default(open_client: TestClient) -> None:
    r = open_client.get("/health/ready", headers={"Origin": "https://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    pre = open_client.options("/segment", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in pre.headers and pre.status_code >= 400


def test_cors_allow_list(models_dir: Path) -> None:
    c = start_client(make_settings(models_dir, cors_allow_origins="https://pacs.example", api_keys=KEYS[0]))
    try:
        ok = c.get("/health/live", headers={"Origin": "https://pacs.example"})
        assert ok.headers["access-control-allow-origin"] == "https://pacs.example"
        assert "x-request-id" in ok.headers["access-control-expose-headers"].lower()
        assert "access-control-allow-origin" not in c.get("/health/live", headers={"Origin": "https://evil.example"}).headers
        # A preflight carries no credentials: answered by CORS before the key check.
        pre = c.options(
            "/segment",
            headers={
                "Origin": "https://pacs.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-api-key",
            },
        )
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "https://pacs.example"
        bad = c.options("/segment", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert bad.status_code == 400
        # The 401 itself carries CORS headers, so a browser page can read why.
        r = c.get("/models", headers={"Origin": "https://pacs.example"})
        assert r.status_code == 401 and r.headers["access-control-allow-origin"] == "https://pacs.example"
    finally:
        c.__exit__(None, None, None)


# --------------------------------------------------------------------------- nothing on disk


@pytest.fixture
def disk_writes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every way the upload path could reach the file system: spooled rollover and the tempfile constructors."""
    writes: list[str] = []
    rollover = tempfile.SpooledTemporaryFile.rollover

    def recording_rollover(self: tempfile.SpooledTemporaryFile) -> None:
        writes.append("SpooledTemporaryFile.rollover")
        rollover(self)

    monkeypatch.setattr(tempfile.SpooledTemporaryFile, "rollover", recording_rollover)
    for name in ("TemporaryFile", "NamedTemporaryFile", "mkstemp"):
        original = getattr(tempfile, name)

        def recording(*args: object, _name: str = name, _original: object = original, **kwargs: object) -> object:
            writes.append(_name)
            return _original(*args, **kwargs)  # type: ignore[operator]

        monkeypatch.setattr(tempfile, name, recording)
    return writes


def _big_png() -> bytes:
    data = encode(np.random.default_rng(1).integers(0, 255, (1800, 1200), dtype=np.uint8))
    assert len(data) > 2 * 1024 * 1024  # past Starlette's default 1 MiB spool threshold
    return data


def test_no_uploaded_image_is_written_to_disk(open_client: TestClient, disk_writes: list[str]) -> None:
    big = _big_png()
    assert MultiPartParser.spool_max_size > open_client.app.state.settings.max_upload_bytes
    r = open_client.post("/segment", files={"file": ("a.png", big, "image/png")}, data={"view": "AP", "overlay": "true"})
    assert r.status_code == 200, r.text[:200]
    r = open_client.post("/classify", files={"ap": ("a.png", big, "image/png"), "lat": ("b.png", big, "image/png")})
    # Noise is segmented, then refused by the spine check (no label for what is not a spine): decoded either way.
    assert r.status_code == 200 or r.json()["code"] == "no_spine_found", r.text[:200]
    assert disk_writes == []


def test_the_disk_check_would_see_a_spool(
    open_client: TestClient, disk_writes: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Starlette's default threshold: the same upload rolls over to a temporary file, and the check sees it.
    monkeypatch.setattr(MultiPartParser, "spool_max_size", 1024 * 1024)
    r = open_client.post("/segment", files={"file": ("a.png", _big_png(), "image/png")}, data={"view": "AP"})
    assert r.status_code == 200
    assert "SpooledTemporaryFile.rollover" in disk_writes


# --------------------------------------------------------------------------- logs: request ids, no image data

TOKEN = "PATIENT-TOKEN-7f3a9c"


def _png_with_token() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", TOKEN * 20)
    buf = io.BytesIO()
    Image.fromarray(spine_image()).save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def _dicom_with_token(corrupt: bool = False) -> bytes:
    from pydicom import dcmread

    ds = dcmread(io.BytesIO(make_dicom(spine_image(60, 40), view="AP")))
    ds.PatientName = TOKEN
    ds.PatientID = TOKEN
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    return data[:-500] if corrupt else data


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def test_logs_carry_request_ids_and_no_image_data(models_dir: Path) -> None:
    capture = _Capture()
    root = logging.getLogger()
    client = start_client(make_settings(models_dir, log_level="debug"))
    root.addHandler(capture)
    try:
        png = _png_with_token()
        uploads = [
            ("a.png", png, {"view": "AP", "overlay": "true"}),
            ("a.png", png[: len(png) // 2], {"view": "AP"}),  # corrupt: the decoder's message is logged nowhere
            ("a.dcm", _dicom_with_token(), {}),
            ("a.dcm", _dicom_with_token(corrupt=True), {}),
            ("a.png", png, {"view": TOKEN}),  # a form value is not logged either
            ("a.png", b"", {"view": "AP"}),
        ]
        ids = []
        for name, data, form in uploads:
            r = client.post("/segment", files={"file": (name, data, "application/octet-stream")}, data=form)
            assert r.status_code < 500
            ids.append(r.headers["x-request-id"])
        ids.append(client.post("/classify", files={"ap": ("a.png", png, "image/png")}).headers["x-request-id"])
    finally:
        root.removeHandler(capture)
        client.__exit__(None, None, None)
    text = "\n".join(capture.lines)
    assert capture.lines
    for marker in (TOKEN, base64.b64encode(png[:48]).decode()[:40], png[:16].hex(), repr(png[:16])[2:-1]):
        assert marker not in text, marker
    entries = [json.loads(line) for line in capture.lines]
    access = [e for e in entries if e["logger"] == "service.access"]
    assert [e["request_id"] for e in access] == ids  # one line per request, with its id
    assert all(len(line) < 4000 for line in capture.lines)
