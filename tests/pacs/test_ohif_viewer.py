"""OHIF shows what the service writes: a DX film in the test Orthanc, POST /dicomweb/studies/{uid}/analyze stores
its SEG and SR, and OHIF (npm @ohif/app's built dist/) in Chromium draws the radiograph and lists the SEG and the SR
by the service's series descriptions (screenshot: docs/ohif.png).

Not covered yet: OHIF 3.13.2 drawing the SEG over the film. Double-clicking the SEG series in this headless Chromium
leaves a black page (docs/annotation.md, "Reading the results in a PACS viewer")."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from spine_dicom_testlib import dx_dataset, radiograph_pixels
from spine_ohif_testlib import OHIF_DIST, serve_ohif
from spine_pacs_testlib import Orthanc
from spine_service_testlib import make_settings, start_client
from test_orthanc_round_trip import stow

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "browser"))
from spine_browser_testlib import chromium_or_skip, launch, screenshot

TIMEOUT_MS = 90_000
DOCS_SHOT = Path(__file__).resolve().parents[2] / "docs" / "ohif.png"


@pytest.fixture(scope="module")
def ohif(orthanc: Orthanc) -> Iterator[str]:
    if not (OHIF_DIST / "index.html").is_file():
        give_up = pytest.fail if os.environ.get("SPINE_REQUIRE_OHIF") == "1" else pytest.skip
        give_up(f"no OHIF build at {OHIF_DIST} (.ci/run fetches it: npm pack @ohif/app; or set SPINE_OHIF_DIST)")
    with serve_ohif(orthanc) as url:
        yield url


@pytest.fixture(scope="module")
def analysed_study(models_dir: Path, orthanc: Orthanc) -> str:
    user, password = orthanc.auth
    film = dx_dataset(radiograph_pixels(8, "MONOCHROME2", height=600, width=240), view="AP")
    stow(orthanc, [film])
    client: TestClient = start_client(
        make_settings(models_dir, dicomweb_url=orthanc.dicomweb, dicomweb_username=user, dicomweb_password=password)
    )
    try:
        r = client.post(f"/dicomweb/studies/{film.StudyInstanceUID}/analyze")
        assert r.status_code == 200, r.text
    finally:
        client.__exit__(None, None, None)
    return str(film.StudyInstanceUID)


def _drawn_share(page: Any) -> float:
    """Share of the main viewport's pixels that are not black: the radiograph is drawn there."""
    box = page.evaluate(
        """() => {
        const c = [...document.querySelectorAll('canvas')].sort((a, b) => b.width * b.height - a.width * a.height)[0];
        const r = c.getBoundingClientRect();
        return {x: r.left, y: r.top, width: r.width, height: r.height};
    }"""
    )
    gray = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=box))).convert("L"))
    return float((gray > 40).mean())


@pytest.fixture(scope="module")
def viewer_page(ohif: str, analysed_study: str) -> Iterator[tuple[Any, list[str]]]:
    sync_api = chromium_or_skip()
    with sync_api.sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"{ohif}/viewer?StudyInstanceUIDs={analysed_study}", timeout=TIMEOUT_MS)
            yield page, errors
        finally:
            browser.close()


def test_ohif_lists_the_film_the_seg_and_the_sr(viewer_page: tuple[Any, list[str]]) -> None:
    page, errors = viewer_page
    # The study browser lists the radiograph (DX), the service's SEG and its SR, by their series descriptions.
    page.get_by_text("spine-xray segmentation").wait_for(timeout=TIMEOUT_MS)
    page.get_by_text("spine-xray measurement", exact=False).first.wait_for(timeout=TIMEOUT_MS)
    page.get_by_text("DX", exact=True).first.wait_for(timeout=TIMEOUT_MS)
    skip = page.get_by_text("Skip all")  # OHIF's first-visit tour
    if skip.count():
        skip.first.click()
    page.wait_for_timeout(3_000)
    assert _drawn_share(page) > 0.05, "the viewport shows no film"
    screenshot(page, "ohif_study")
    page.screenshot(path=str(DOCS_SHOT))
    assert not errors, errors
