"""OHIF shows what the service writes: a DX film in the test Orthanc, POST /dicomweb/studies/{uid}/analyze stores
its SEG and SR, and OHIF (npm @ohif/app's built dist/) in Chromium draws the radiograph, lists the SEG and the SR by
the service's series descriptions (screenshot: docs/ohif.png), opens the SEG, lists its segments by the labels the
service wrote and draws them over the film where the SEG's masks are (screenshot: docs/ohif_seg.png).

OHIF 3.13 opens the SEG of a projection film only because the service writes Pixel Measures and Plane Orientation
(Patient) into its shared functional groups (service/dicom/seg.py `add_viewer_geometry`; docs/annotation.md,
"Reading the results in a PACS viewer")."""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.uid import SegmentationStorage
from spine_dicom_testlib import dx_dataset, radiograph_pixels
from spine_ohif_testlib import OHIF_DIST, serve_ohif
from spine_pacs_testlib import Orthanc
from spine_service_testlib import make_settings, start_client
from test_orthanc_round_trip import pacs_client, stow

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "browser"))
from spine_browser_testlib import chromium_or_skip, launch, screenshot

TIMEOUT_MS = 90_000
DOCS = Path(__file__).resolve().parents[2] / "docs"
DOCS_SHOT, DOCS_SEG_SHOT = DOCS / "ohif.png", DOCS / "ohif_seg.png"
# OHIF's first-visit tour (customization 'ohif.tours', id basicViewerTour) lays a modal overlay over the viewer that
# swallows clicks; marked as shown in localStorage, as OHIF itself does once it has run.
NO_TOUR = "localStorage.setItem('shownTours', JSON.stringify(['basicViewerTour']))"
COLOURED = 12  # max - min of a pixel's RGB above this: not grey (the film is grey, the segments are not)


@dataclass(frozen=True)
class AnalysedStudy:
    uid: str
    segment_labels: list[str]  # as the SEG stored in Orthanc says
    mask: np.ndarray  # the union of the SEG's segments, film-sized (rows x columns) bool


@pytest.fixture(scope="module")
def ohif(orthanc: Orthanc) -> Iterator[str]:
    if not (OHIF_DIST / "index.html").is_file():
        give_up = pytest.fail if os.environ.get("SPINE_REQUIRE_OHIF") == "1" else pytest.skip
        give_up(f"no OHIF build at {OHIF_DIST} (.ci/run fetches it: npm pack @ohif/app; or set SPINE_OHIF_DIST)")
    with serve_ohif(orthanc) as url:
        yield url


@pytest.fixture(scope="module")
def analysed_study(models_dir: Path, orthanc: Orthanc) -> AnalysedStudy:
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
    (seg_ref,) = [s for s in r.json()["stored"] if s["sop_class_uid"] == SegmentationStorage]
    seg = pacs_client(orthanc).retrieve_instance(
        str(film.StudyInstanceUID), seg_ref["series_instance_uid"], seg_ref["sop_instance_uid"]
    )
    frames = seg.pixel_array.reshape(-1, int(seg.Rows), int(seg.Columns))
    labels = [str(s.SegmentLabel) for s in seg.SegmentSequence]
    assert labels, "the SEG has no segment"
    return AnalysedStudy(uid=str(film.StudyInstanceUID), segment_labels=labels, mask=frames.astype(bool).any(axis=0))


def _viewport(page: Any) -> np.ndarray:
    """The main viewport (the largest canvas) as the page shows it, RGB, inside its 1-pixel frame."""
    box = page.evaluate(
        """() => {
        const c = [...document.querySelectorAll('canvas')].sort((a, b) => b.width * b.height - a.width * a.height)[0];
        const r = c.getBoundingClientRect();
        return {x: r.left + 4, y: r.top + 4, width: r.width - 8, height: r.height - 8};
    }"""
    )
    return np.asarray(Image.open(io.BytesIO(page.screenshot(clip=box))).convert("RGB")).astype(int)


def _drawn_share(page: Any) -> float:
    """Share of the main viewport's pixels that are not black: the radiograph is drawn there."""
    return float((_viewport(page).mean(axis=2) > 40).mean())


def _film_box(rgb: np.ndarray) -> tuple[slice, slice]:
    """Where the film lies in the viewport: the columns mostly not black, and the rows mostly not black in them."""
    lit = rgb.mean(axis=2) > 25
    cols = np.flatnonzero(lit.mean(axis=0) > 0.5)
    rows = np.flatnonzero(lit[:, cols].mean(axis=1) > 0.5)
    assert rows.size and cols.size, "no film in the viewport"
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _coloured(rgb: np.ndarray) -> np.ndarray:
    return (rgb.max(axis=2) - rgb.min(axis=2)) > COLOURED


def _overlap_with_mask(rgb: np.ndarray, mask: np.ndarray) -> float:
    """Intersection over union of the film's coloured pixels and the SEG's mask scaled onto the film on screen."""
    rows, cols = _film_box(rgb)
    coloured = _coloured(rgb[rows, cols])
    height, width = coloured.shape
    assert abs(height / width - mask.shape[0] / mask.shape[1]) < 0.1, f"the film box {height}x{width} is not the film"
    scaled = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.NEAREST)) > 0
    return float((coloured & scaled).sum() / max((coloured | scaled).sum(), 1))


@dataclass
class Viewer:
    page: Any
    errors: list[str]  # uncaught exceptions
    console: list[str]  # console errors (OHIF logs what it fails to read there, e.g. a SEG it cannot load)


@pytest.fixture(scope="module")
def viewer(ohif: str, analysed_study: AnalysedStudy) -> Iterator[Viewer]:
    sync_api = chromium_or_skip()
    with sync_api.sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.add_init_script(NO_TOUR)
            viewer = Viewer(page, [], [])
            page.on("pageerror", lambda e: viewer.errors.append(str(e)))
            page.on("console", lambda m: viewer.console.append(m.text[:500]) if m.type == "error" else None)
            page.goto(f"{ohif}/viewer?StudyInstanceUIDs={analysed_study.uid}", timeout=TIMEOUT_MS)
            yield viewer
        finally:
            browser.close()


def test_ohif_lists_the_film_the_seg_and_the_sr(viewer: Viewer) -> None:
    page = viewer.page
    # The study browser lists the radiograph (DX), the service's SEG and its SR, by their series descriptions.
    page.get_by_text("spine-xray segmentation").wait_for(timeout=TIMEOUT_MS)
    page.get_by_text("spine-xray measurement", exact=False).first.wait_for(timeout=TIMEOUT_MS)
    page.get_by_text("DX", exact=True).first.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_timeout(3_000)
    assert _drawn_share(page) > 0.05, "the viewport shows no film"
    screenshot(page, "ohif_study")
    page.screenshot(path=str(DOCS_SHOT))
    assert not viewer.errors, viewer.errors


def test_ohif_opens_the_seg_lists_its_segments_and_draws_them_over_the_film(
    viewer: Viewer, analysed_study: AnalysedStudy
) -> None:
    page = viewer.page
    page.get_by_text("spine-xray segmentation").wait_for(timeout=TIMEOUT_MS)
    page.wait_for_timeout(2_000)
    film_alone = _viewport(page)
    assert _coloured(film_alone[_film_box(film_alone)]).mean() < 0.01, "the film alone is already coloured"

    page.get_by_text("spine-xray segmentation").first.dblclick()
    # OHIF 3.13 shows the SEG over its film and asks whether to load it into the segmentation panel.
    try:
        page.get_by_text("Do you want to open this Segmentation?").wait_for(timeout=TIMEOUT_MS)
    except Exception as exc:  # playwright's TimeoutError: say what OHIF logged instead
        raise AssertionError(f"OHIF did not open the SEG; its console errors: {viewer.console}") from exc
    page.get_by_role("button", name="Yes").click()
    page.locator("[data-cy=panelSegmentation-btn]").click()
    for label in analysed_study.segment_labels:
        page.get_by_text(label, exact=True).first.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_timeout(2_000)

    with_seg = _viewport(page)
    screenshot(page, "ohif_seg")
    shot = Image.open(io.BytesIO(page.screenshot())).convert("RGB")
    small = shot.resize((shot.width * 2 // 3, shot.height * 2 // 3), Image.LANCZOS)
    small.quantize(256, method=Image.Quantize.FASTOCTREE).save(DOCS_SEG_SHOT, optimize=True)  # about 50 KB
    overlap = _overlap_with_mask(with_seg, analysed_study.mask)
    assert overlap > 0.6, f"the coloured pixels over the film cover the SEG's masks only {overlap:.2f} (IoU)"
    assert not viewer.errors, viewer.errors
    assert not viewer.console, viewer.console
