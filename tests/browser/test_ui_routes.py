"""The viewer's routes without a browser: the page, its static files, the film preview, the offline docs pages."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from spine_browser_testlib import encode, make_dicom, make_settings, spine_image, start_client, write_models_dir

from service.api.routes.ui import STATIC_DIR

TEST_IDS = ("ap-file", "lat-file", "analyze", "status", "label", "score", "legend", "film", "cobb", "warnings")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    c = start_client(make_settings(write_models_dir(tmp_path_factory.mktemp("ui-route-models"))))
    try:
        yield c
    finally:
        c.__exit__(None, None, None)


def test_viewer_page_has_the_stable_hooks_and_only_local_assets(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    for test_id in TEST_IDS:
        assert f'data-testid="{test_id}"' in html, test_id
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets and all(a.startswith("/") for a in assets), assets  # nothing from another host
    for asset in assets:
        if asset.startswith("/static/"):
            assert client.get(asset).status_code == 200, asset


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
def test_docs_pages_point_at_packaged_assets(client: TestClient, path: str) -> None:
    html = client.get(path).text
    assert "Content-Security-Policy" in client.get(path).headers
    scripts = re.findall(r'<script src="([^"]+)"', html) + re.findall(r'<link[^>]+href="([^"]+)"', html)
    assert scripts and all(s.startswith("/static/vendor/") for s in scripts), scripts
    for asset in scripts:
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert response.content == (STATIC_DIR / asset.removeprefix("/static/")).read_bytes(), asset


def test_vendored_assets_carry_their_licences() -> None:
    for folder in ("swagger-ui", "redoc"):
        assert (STATIC_DIR / "vendor" / folder / "LICENSE").is_file(), folder


@pytest.mark.parametrize("path", ["/static/../main.py", "/static/%2e%2e/main.py", "/static/viewer/missing.js"])
def test_static_route_serves_nothing_outside_its_folder(client: TestClient, path: str) -> None:
    assert client.get(path).status_code == 404


def _gray(png: bytes) -> np.ndarray:
    image = Image.open(io.BytesIO(png))
    assert image.mode == "L"
    return np.asarray(image)


def test_preview_of_a_dicom_film_is_its_decoded_pixels_at_the_original_size(client: TestClient) -> None:
    pixels = spine_image(200, 80)
    response = client.post("/viewer/preview", files={"file": ("film.dcm", make_dicom(pixels.astype(np.uint16) * 16))})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    gray = _gray(response.content)
    assert gray.shape == pixels.shape
    # The same picture: the display stretch is monotonic, so it keeps the order of the film's intensities.
    assert np.corrcoef(gray.ravel().astype(float), pixels.ravel().astype(float))[0, 1] > 0.95


def test_preview_keeps_a_png_film_size(client: TestClient) -> None:
    response = client.post("/viewer/preview", files={"file": ("film.png", encode(spine_image(90, 40), "PNG"))})
    assert _gray(response.content).shape == (90, 40)


def test_preview_of_a_text_file_is_a_4xx_with_a_message(client: TestClient) -> None:
    response = client.post("/viewer/preview", files={"file": ("notes.txt", b"not an image")})
    assert 400 <= response.status_code < 500
    body = response.json()
    assert body["code"] and (body.get("message") or body.get("detail"))


def test_static_files_are_package_data() -> None:
    pyproject = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    assert re.search(r'service\s*=\s*\[\s*"static/\*\*/\*"', pyproject)
    assert (STATIC_DIR / "viewer" / "index.html").is_file()
