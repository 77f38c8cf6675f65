"""The viewer page at `/` in a real browser (Debian's chromium through Playwright) against a live service on
tiny generated models, with every request outside the service aborted (an offline network)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from spine_browser_testlib import (
    DEMO_STRUCTURE,
    canvas_digest,
    demo_models_dir,
    encode,
    make_dicom,
    make_settings,
    non_background_fraction,
    offline_page,
    screenshot,
    serve_live,
    spine_image,
)

from spine_engine.overlay import structure_colour

LABEL = re.compile(r"^(Normal|Damaged)$")
TIMEOUT_MS = 30_000


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    models = demo_models_dir(tmp_path_factory.mktemp("ui-models"))
    # Demonstration models run only when asked: this server is asked to, so the page must show them as such.
    with serve_live(make_settings(models, demonstration_models=True)) as address:
        yield f"http://{address}"


def _film(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _api_classify(base_url: str, name: str, data: bytes) -> httpx.Response:
    files = {"ap": (name, data)}
    return httpx.post(f"{base_url}/classify", files=files, data={"include_masks": "true", "mask_format": "png"}, timeout=60)


def _analyse(page: Any, base_url: str, film: Path) -> None:
    page.goto(base_url + "/")
    page.get_by_test_id("ap-file").set_input_files(str(film))
    page.get_by_test_id("analyze").click()


def _wait_done(page: Any) -> None:
    page.wait_for_selector("[data-testid=status][data-state=done]", timeout=TIMEOUT_MS)


def test_viewer_shows_label_legend_and_film(viewer: tuple[Any, list[str]], base_url: str, tmp_path: Path) -> None:
    page, problems = viewer
    data = encode(spine_image(600, 240), "PNG")
    expected = _api_classify(base_url, "film.png", data).json()
    _analyse(page, base_url, _film(tmp_path, "film.png", data))

    label = page.get_by_test_id("label")
    label.wait_for(timeout=TIMEOUT_MS)
    page.wait_for_function("() => /^(Normal|Damaged)$/.test(document.querySelector('[data-testid=label]').textContent)")
    _wait_done(page)
    assert label.text_content() == expected["label"]
    assert f"score {expected['score']}" in page.get_by_test_id("score").text_content()  # the API's precision

    # The legend lists exactly the structures the API returned, the demonstration one marked.
    returned = sorted(m["structure"] for v in expected["views"] for m in v["masks"])
    items = page.locator("[data-testid=legend] li[data-structure]")
    assert sorted(items.evaluate_all("els => els.map(e => e.dataset.structure)")) == returned
    assert DEMO_STRUCTURE in returned
    assert "demonstration" in page.locator(f"[data-testid=legend] li[data-structure='{DEMO_STRUCTURE}']").text_content()
    assert "demonstration" not in page.locator("[data-testid=legend] li[data-structure='Ap_Vertebra']").text_content()
    # Its colours are the service's overlay colours.
    for structure in returned:
        assert page.evaluate("s => SpineFilm.colourOf(s)", structure) == list(structure_colour(structure))

    # The film is drawn: most of the canvas is no longer the empty background, and the placeholder is gone.
    assert not page.locator("#stage-empty").is_visible()
    assert non_background_fraction(page) > 0.2
    # The API's own warning about the demonstration model is shown.
    api_warning = next(w for w in expected["warnings"] if DEMO_STRUCTURE in w)
    assert api_warning in page.get_by_test_id("warnings").text_content()
    # Per-mask scores: one row per score the API returned.
    assert page.locator("#per-mask tbody tr").count() == len(expected["per_mask"])
    # Downloads: the JSON and one PNG per mask; no DICOM SEG button while /openapi.json lacks /dicom/seg.
    downloads = page.locator("#downloads")
    assert downloads.locator("a[download='spine-xray-result.json']").count() == 1
    assert downloads.locator("a[download$='.png']").count() == len(returned)
    paths = httpx.get(f"{base_url}/openapi.json").json()["paths"]
    assert (downloads.get_by_text("DICOM SEG").count() > 0) == ("/dicom/seg" in paths)
    screenshot(page, "viewer-1280x800")

    # Controls change what is drawn: hiding a structure, the opacity slider, keyboard zoom, fit.
    demo_toggle = page.locator(f"[data-testid=legend] li[data-structure='{DEMO_STRUCTURE}'] input[type=checkbox]")
    assert not demo_toggle.is_checked()  # demonstration masks start hidden
    before = canvas_digest(page)
    demo_toggle.check()
    assert canvas_digest(page) != before
    demo_toggle.uncheck()
    assert canvas_digest(page) == before
    page.locator("[data-testid=legend] li[data-structure='Ap_Vertebra'] input[type=checkbox]").uncheck()
    hidden = canvas_digest(page)
    assert hidden != before
    page.locator("#opacity").fill("100")
    assert canvas_digest(page) != hidden
    page.get_by_test_id("film").focus()
    fitted = canvas_digest(page)
    page.keyboard.press("+")
    assert canvas_digest(page) != fitted
    page.keyboard.press("0")
    assert canvas_digest(page) == fitted
    assert problems == []


def test_dicom_film_is_drawn_from_the_service_preview(viewer: tuple[Any, list[str]], base_url: str, tmp_path: Path) -> None:
    page, problems = viewer
    dicom = make_dicom(spine_image(400, 160).astype("uint16") * 16, view="AP")
    previews: list[str] = []
    page.on("request", lambda r: previews.append(r.url) if r.url.endswith("/viewer/preview") else None)
    _analyse(page, base_url, _film(tmp_path, "film.dcm", dicom))
    _wait_done(page)
    assert LABEL.match(page.get_by_test_id("label").text_content())
    assert previews, "a browser cannot draw DICOM: the page must ask the service for the preview"
    assert non_background_fraction(page) > 0.2
    assert problems == []


def test_api_error_is_shown_with_the_api_message(viewer: tuple[Any, list[str]], base_url: str, tmp_path: Path) -> None:
    page, _ = viewer
    data = b"this is a text file, not a radiograph\n"
    response = _api_classify(base_url, "notes.txt", data)
    assert 400 <= response.status_code < 500
    body = response.json()
    message = body.get("message") or body["detail"]
    _analyse(page, base_url, _film(tmp_path, "notes.txt", data))
    status = page.get_by_test_id("status")
    page.wait_for_selector("[data-testid=status][data-state=error]", timeout=TIMEOUT_MS)
    assert message in status.text_content()
    assert str(response.status_code) in status.text_content()
    assert page.get_by_test_id("label").text_content() == ""
    screenshot(page, "viewer-api-error")


def _with_cobb(body: dict[str, Any]) -> dict[str, Any]:
    """A real /classify answer plus `cobb` and `vertebrae` (the tiny test models never find 17 vertebrae)."""
    view = body["views"][0]
    w, h = view["width"], view["height"]

    def corners(y: float) -> list[list[float]]:  # TL, TR, BL, BR of a tilted box at height fraction y
        return [[w * 0.35, h * y], [w * 0.65, h * (y + 0.02)], [w * 0.35, h * (y + 0.08)], [w * 0.65, h * (y + 0.1)]]

    body["vertebrae"] = [{"level": level, "corners": corners(y)} for level, y in (("T5", 0.2), ("T8", 0.45), ("T12", 0.7))]
    body["cobb"] = {
        "angles_deg": [0.0, 42.1, 0.0],
        "max_deg": 42.1,
        "curve": "C",
        "curves": [{"name": "main_thoracic", "upper_end": "T5", "lower_end": "T12", "apex": "T8", "angle_deg": 42.1}],
        "severity": "moderate",
    }
    return body


def test_cobb_angles_and_end_vertebrae_drawn(viewer: tuple[Any, list[str]], base_url: str, tmp_path: Path) -> None:
    page, _ = viewer
    data = encode(spine_image(600, 240), "PNG")
    # Chromium does not hand an intercepted upload's file to Playwright, so the answer is fetched here and served.
    body = json.dumps(_with_cobb(_api_classify(base_url, "film.png", data).json()))
    page.route(f"{base_url}/classify", lambda route: route.fulfill(status=200, content_type="application/json", body=body))
    _analyse(page, base_url, _film(tmp_path, "film.png", data))
    _wait_done(page)
    cobb = page.get_by_test_id("cobb").text_content()
    assert "42.1°" in cobb and "T5" in cobb and "T12" in cobb and "moderate" in cobb
    with_lines = canvas_digest(page)
    page.locator("#show-cobb").uncheck()
    assert canvas_digest(page) != with_lines


def test_readable_at_tablet_width(browser: Any, base_url: str, tmp_path: Path) -> None:
    page, problems = offline_page(browser, base_url, viewport=(820, 1180))
    try:
        _analyse(page, base_url, _film(tmp_path, "film.png", encode(spine_image(600, 240), "PNG")))
        _wait_done(page)
        # No sideways scrolling, and the film canvas is on screen at a usable size.
        assert page.evaluate("() => document.documentElement.scrollWidth <= document.documentElement.clientWidth")
        box = page.get_by_test_id("film").bounding_box()
        assert box is not None and box["width"] > 600 and box["height"] > 400
        assert non_background_fraction(page) > 0.1
        screenshot(page, "viewer-tablet-820")
        assert problems == []
    finally:
        page.close()


def test_ap_and_lat_films_each_get_a_tab(viewer: tuple[Any, list[str]], base_url: str, tmp_path: Path) -> None:
    page, problems = viewer
    page.goto(base_url + "/")
    page.get_by_test_id("ap-file").set_input_files(str(_film(tmp_path, "ap.png", encode(spine_image(600, 240), "PNG"))))
    lat = _film(tmp_path, "lat.jpg", encode(spine_image(500, 300, seed=1), "JPEG"))
    page.get_by_test_id("lat-file").set_input_files(str(lat))
    page.get_by_test_id("analyze").click()
    _wait_done(page)
    views = page.locator("[data-testid=legend] li[data-structure]").evaluate_all("els => els.map(e => e.dataset.view)")
    assert set(views) == {"AP", "LAT"}
    tabs = page.locator("#view-tabs button")
    assert tabs.all_text_contents() == ["AP", "LAT"]
    ap_digest = canvas_digest(page)
    tabs.nth(1).click()
    assert tabs.nth(1).get_attribute("aria-pressed") == "true"
    assert canvas_digest(page) != ap_digest
    assert non_background_fraction(page) > 0.2
    assert problems == []


_PINCH_JS = """() => {
  const c = document.querySelector('[data-testid=film]');
  const r = c.getBoundingClientRect(), x = r.left + r.width / 2, y = r.top + r.height / 2;
  const fire = (type, id, dx) =>
    c.dispatchEvent(new PointerEvent(type, {pointerId: id, clientX: x + dx, clientY: y, bubbles: true}));
  fire('pointerdown', 11, -40); fire('pointerdown', 12, 40);
  fire('pointermove', 11, -80); fire('pointermove', 12, 80);   // fingers twice as far apart
  fire('pointerup', 11, -80); fire('pointerup', 12, 80);
}"""


def test_mouse_drag_wheel_and_pinch_move_the_film(viewer: tuple[Any, list[str]], base_url: str, tmp_path: Path) -> None:
    page, problems = viewer
    _analyse(page, base_url, _film(tmp_path, "film.png", encode(spine_image(600, 240), "PNG")))
    _wait_done(page)
    view = "() => { const f = window.spineViewer.film; return [f.scale, f.tx, f.ty]; }"
    box = page.get_by_test_id("film").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    scale, tx, ty = page.evaluate(view)
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 50, cy + 30, steps=3)
    page.mouse.up()
    assert page.evaluate(view) == pytest.approx([scale, tx + 50, ty + 30])
    page.mouse.wheel(0, -300)  # wheel up: zoom in at the pointer
    assert page.evaluate(view)[0] > scale
    page.keyboard.press("0")
    page.evaluate(_PINCH_JS)
    assert page.evaluate(view)[0] == pytest.approx(2 * scale)
    assert problems == []


def test_keyboard_alone_runs_an_analysis(viewer: tuple[Any, list[str]], base_url: str, tmp_path: Path) -> None:
    page, problems = viewer
    page.goto(base_url + "/")
    page.get_by_test_id("ap-file").set_input_files(str(_film(tmp_path, "film.png", encode(spine_image(600, 240), "PNG"))))
    page.get_by_test_id("lat-file").focus()
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.dataset.testid") == "analyze"
    page.keyboard.press("Enter")
    _wait_done(page)
    # The legend's toggles are reachable and work from the keyboard too.
    toggle = page.locator("[data-testid=legend] li[data-structure='Ap_Vertebra'] input[type=checkbox]")
    toggle.focus()
    page.keyboard.press("Space")
    assert not toggle.is_checked()
    assert problems == []
