"""The viewer's "DICOM SEG" download in a real browser (Debian's chromium through Playwright) against a live
service on tiny generated models: a DICOM radiograph gives a SEG of what /classify showed; a PNG/JPEG film gets
no working button, and the page says why."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from spine_browser_testlib import (
    DEMO_STRUCTURE,
    demo_models_dir,
    dx_bytes,
    encode,
    make_settings,
    serve_live,
    spine_image,
)

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    models = demo_models_dir(tmp_path_factory.mktemp("seg-ui-models"))
    with serve_live(make_settings(models, demonstration_models=True)) as address:
        yield f"http://{address}"


def _analyse(page: Any, base_url: str, film: Path) -> dict[str, Any]:
    """Upload `film` as AP, Analyse, wait for the label; returns the /classify answer the page received."""
    page.goto(base_url + "/")
    page.evaluate("() => window.spineViewer.ready")  # the buttons depend on /openapi.json
    page.get_by_test_id("ap-file").set_input_files(str(film))
    with page.expect_response(lambda r: r.url == f"{base_url}/classify", timeout=TIMEOUT_MS) as answer:
        page.get_by_test_id("analyze").click()
    assert answer.value.status == 200, answer.value.text()
    page.wait_for_selector("[data-testid=status][data-state=done]", timeout=TIMEOUT_MS)
    page.wait_for_function("() => /^(Normal|Damaged)$/.test(document.querySelector('[data-testid=label]').textContent)")
    return answer.value.json()


def test_seg_endpoint_is_offered(base_url: str) -> None:
    # The page offers the button only when /openapi.json lists POST /dicom/seg: the tests below need it listed.
    assert "post" in httpx.get(f"{base_url}/openapi.json", timeout=30).json()["paths"]["/dicom/seg"]


def test_dicom_film_downloads_its_segmentation(viewer: tuple[Any, list[str]], base_url: str, tmp_path: Path) -> None:
    page, problems = viewer
    source_bytes = dx_bytes(bits=16, view="AP")
    source = pydicom.dcmread(io.BytesIO(source_bytes))
    film = tmp_path / "film.dcm"
    film.write_bytes(source_bytes)
    classified = _analyse(page, base_url, film)
    structures = sorted(m["structure"] for v in classified["views"] for m in v["masks"])
    assert DEMO_STRUCTURE in structures and len(structures) > 1

    button = page.locator("#downloads button", has_text="AP DICOM SEG")
    assert button.is_enabled()
    with page.expect_download(timeout=TIMEOUT_MS) as download_info:
        button.click()
    download = download_info.value
    assert download.suggested_filename == "AP_seg.dcm"
    saved = tmp_path / "seg.dcm"
    download.save_as(saved)
    page.wait_for_selector("[data-testid=status][data-state=done]", timeout=TIMEOUT_MS)
    assert "DICOM SEG downloaded" in page.get_by_test_id("status").text_content()

    seg = pydicom.dcmread(saved)
    assert seg.SOPClassUID == SEGMENTATION_STORAGE
    assert seg.Modality == "SEG"
    # One segment per structure the page showed, and the SEG points at the uploaded instance.
    assert sorted(s.SegmentLabel for s in seg.SegmentSequence) == structures
    referenced = {i.ReferencedSOPInstanceUID for s in seg.ReferencedSeriesSequence for i in s.ReferencedInstanceSequence}
    assert referenced == {source.SOPInstanceUID}
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert problems == []


@pytest.mark.parametrize(("name", "fmt"), [("film.png", "PNG"), ("film.jpg", "JPEG")])
def test_non_dicom_film_gets_no_seg_and_is_told_why(
    viewer: tuple[Any, list[str]], base_url: str, tmp_path: Path, name: str, fmt: str
) -> None:
    page, problems = viewer
    film = tmp_path / name
    film.write_bytes(encode(spine_image(600, 240), fmt))
    seg_requests: list[str] = []
    page.on("request", lambda r: seg_requests.append(r.url) if r.url.endswith("/dicom/seg") else None)
    _analyse(page, base_url, film)

    button = page.locator("#downloads button", has_text="AP DICOM SEG")
    assert button.count() == 1
    assert button.is_disabled()
    reason = page.locator("#" + button.get_attribute("aria-describedby"))
    assert reason.is_visible()
    text = reason.text_content()
    assert "needs a DICOM film" in text and fmt in text
    assert button.get_attribute("title") == text
    button.click(force=True)  # a disabled button sends nothing
    assert seg_requests == []
    assert page.get_by_test_id("status").get_attribute("data-state") == "done"
    assert problems == []
