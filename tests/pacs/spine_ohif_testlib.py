"""OHIF for the tests: the built viewer of the npm package @ohif/app (its dist/, fetched by .ci/run with `npm pack`)
served statically on a free loopback port with docker/ohif/app-config.js, and /dicom-web (and /wado) forwarded to
the test Orthanc with its credentials: OHIF and the PACS share one origin, as nginx arranges in the compose file.
"""

from __future__ import annotations

import mimetypes
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import requests
from spine_pacs_testlib import Orthanc, free_port

REPO = Path(__file__).resolve().parents[2]
OHIF_DIST = Path(os.environ.get("SPINE_OHIF_DIST", REPO / ".ohif" / "dist"))
APP_CONFIG = REPO / "docker" / "ohif" / "app-config.js"
_FORWARDED = ("/dicom-web/", "/wado")
_PASS_HEADERS = ("accept", "range")
mimetypes.add_type("application/wasm", ".wasm")
mimetypes.add_type("text/javascript", ".js")


def _handler(orthanc: Orthanc, dist: Path) -> type[BaseHTTPRequestHandler]:
    session = requests.Session()
    session.auth = orthanc.auth

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet
            pass

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path.startswith(_FORWARDED):
                headers = {k: v for k, v in self.headers.items() if k.lower() in _PASS_HEADERS}
                answer = session.get(orthanc.url + self.path, headers=headers, timeout=60)
                return self._send(
                    answer.status_code, answer.content, answer.headers.get("Content-Type", "application/octet-stream")
                )
            if path == "/app-config.js":
                return self._send(200, APP_CONFIG.read_bytes(), "text/javascript")
            file = (dist / path.lstrip("/")).resolve()
            if not (file.is_file() and file.is_relative_to(dist.resolve())):
                file = dist / "index.html"  # a single-page app: its routes (/viewer?...) are index.html
            self._send(200, file.read_bytes(), mimetypes.guess_type(file.name)[0] or "application/octet-stream")

    return Handler


@contextmanager
def serve_ohif(orthanc: Orthanc, dist: Path = OHIF_DIST) -> Iterator[str]:
    """OHIF's dist/ and the Orthanc's DICOMweb on one origin; yields its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), _handler(orthanc, dist))
    thread = threading.Thread(target=server.serve_forever, name="ohif", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
