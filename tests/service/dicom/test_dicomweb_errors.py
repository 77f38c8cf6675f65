"""POST /dicomweb/studies/{uid}/analyze without a working PACS: not configured, unreachable, silent (timeout).

The round trip with a real PACS is tests/pacs (Orthanc)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from spine_service_testlib import make_settings, start_client

STUDY = "1.2.826.0.1.3680043.8.498.1"


def analyze(client: TestClient, study: str = STUDY):
    return client.post(f"/dicomweb/studies/{study}/analyze")


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: connecting is refused


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join(2)
        for conn in held:
            conn.close()
        server.close()


def with_pacs(models_dir: Path, url: str, **settings: object) -> TestClient:
    return start_client(make_settings(models_dir, dicomweb_url=url, **settings))


def test_not_configured_is_a_404_that_says_so(client: TestClient):
    response = analyze(client)
    assert response.status_code == 404
    assert response.json()["code"] == "dicomweb_not_configured" and "SPINE_DICOMWEB_URL" in response.json()["detail"]


@pytest.mark.parametrize("study", ["not-a-uid", "1..2", "1." + "2" * 70])
def test_a_malformed_study_uid_is_a_422(client: TestClient, study: str):
    assert analyze(client, study).status_code == 422


def test_an_unreachable_pacs_is_a_502(models_dir: Path):
    client = with_pacs(models_dir, f"http://127.0.0.1:{closed_port()}/dicom-web")
    try:
        response = analyze(client)
    finally:
        client.__exit__(None, None, None)
    assert response.status_code == 502
    assert response.json()["code"] == "pacs_unreachable" and "cannot be reached" in response.json()["detail"]


def test_a_pacs_that_does_not_answer_is_a_504(models_dir: Path, silent_server: int):
    client = with_pacs(models_dir, f"http://127.0.0.1:{silent_server}/dicom-web", dicomweb_timeout_s=0.5)
    try:
        response = analyze(client)
    finally:
        client.__exit__(None, None, None)
    assert response.status_code == 504
    assert response.json()["code"] == "pacs_timeout" and "0.5 s" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/dicom/seg", "/dicom/sr", f"/dicomweb/studies/{STUDY}/analyze"])
def test_dicom_routes_are_admitted_as_inference(path: str):
    """They decode and infer: overload protection (SPINE_MAX_QUEUE) bounds them like /segment."""
    from service.core.admission import INFERENCE_PATH

    assert INFERENCE_PATH.match(path)


class _Garbage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"<html>this is not DICOM JSON</html>"
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_a_pacs_answering_garbage_is_a_502(models_dir: Path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Garbage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = with_pacs(models_dir, f"http://127.0.0.1:{server.server_address[1]}/dicom-web")
    try:
        response = analyze(client)
    finally:
        client.__exit__(None, None, None)
        server.shutdown()
        server.server_close()
    assert response.status_code == 502, response.text
    assert response.json()["code"] in {"pacs_error", "pacs_bad_answer"} and "QIDO-RS" in response.json()["detail"]
