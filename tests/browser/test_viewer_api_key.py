"""The viewer page against a service started with SPINE_API_KEYS, in a real browser (Debian's chromium through
Playwright, every request outside the service aborted): the page loads without a key, asks for one after the
API's 401, keeps it in sessionStorage only, sends it as X-API-Key on every call, and shows the API's message
when the key is wrong."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from spine_browser_testlib import (
    dx_bytes,
    encode,
    make_settings,
    offline_page,
    serve_live,
    spine_image,
    write_models_dir,
)

from service.core.security import UNAUTHORIZED_DETAIL

KEY = "viewer-key-5b1f0c2e9a"
WRONG_KEY = "not-the-key-0000"
TIMEOUT_MS = 60_000
API_CALLS = ("/classify", "/viewer/preview", "/dicom/seg", "/openapi.json")


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    models = write_models_dir(tmp_path_factory.mktemp("key-ui-models"))
    with serve_live(make_settings(models, api_keys=KEY, demonstration_models=True)) as address:
        yield f"http://{address}"


@pytest.fixture
def viewer(browser: Any, base_url: str) -> Iterator[tuple[Any, list[str], list[tuple[str, str | None]]]]:
    """The page, its problems (the 401s the flow provokes are expected, not problems) and every API call it made,
    with the X-API-Key it carried."""
    page, problems = offline_page(browser, base_url)
    calls: list[tuple[str, str | None]] = []

    def record(request: Any) -> None:
        path = request.url[len(base_url) :].split("?")[0]
        if path in API_CALLS:
            calls.append((path, request.headers.get("x-api-key")))

    page.on("request", record)
    try:
        yield page, problems, calls
    finally:
        page.close()


def _unexpected(problems: list[str]) -> list[str]:
    # Chromium logs each non-2xx answer to the console; the 401s are what this flow is about.
    return [p for p in problems if "status of 401" not in p]


def _film(tmp_path: Path) -> Path:
    path = tmp_path / "film.png"
    path.write_bytes(encode(spine_image(600, 240), "PNG"))
    return path


def _wait_state(page: Any, state: str) -> None:
    page.wait_for_selector(f"[data-testid=status][data-state={state}]", timeout=TIMEOUT_MS)


def _wait_label(page: Any) -> str:
    _wait_state(page, "done")
    page.wait_for_function("() => /^(Normal|Damaged)$/.test(document.querySelector('[data-testid=label]').textContent)")
    return page.get_by_test_id("label").text_content()


def _storage(page: Any) -> dict[str, Any]:
    return page.evaluate("() => ({session: {...sessionStorage}, local: {...localStorage}, url: location.href})")


def test_the_service_refuses_the_api_without_the_key(base_url: str) -> None:
    # What the page relies on: the page itself is public, the API is not.
    assert httpx.get(f"{base_url}/", timeout=30).status_code == 200
    r = httpx.post(f"{base_url}/classify", files={"ap": ("a.png", b"x")}, timeout=30)
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"


def test_key_prompt_after_401_then_a_label(viewer: Any, base_url: str, tmp_path: Path) -> None:
    page, problems, calls = viewer
    page.goto(base_url + "/")
    page.evaluate("() => window.spineViewer.ready")
    key_input = page.get_by_test_id("api-key")
    assert not key_input.is_visible()  # no prompt before the service asks
    page.get_by_test_id("ap-file").set_input_files(str(_film(tmp_path)))
    with page.expect_response(lambda r: r.url == f"{base_url}/classify", timeout=TIMEOUT_MS) as refused:
        page.get_by_test_id("analyze").click()
    assert refused.value.status == 401

    # The prompt, focused, and the API's own message in the status.
    key_input.wait_for(state="visible", timeout=TIMEOUT_MS)
    assert "This service needs an API key" in page.get_by_test_id("key-form").text_content()
    assert key_input.get_attribute("type") == "password"
    _wait_state(page, "error")
    assert UNAUTHORIZED_DETAIL in page.get_by_test_id("status").text_content()
    assert page.evaluate("() => document.activeElement.dataset.testid") == "api-key"

    # By keyboard only: type the key, Enter; the page retries the same film.
    with page.expect_response(lambda r: r.url == f"{base_url}/classify", timeout=TIMEOUT_MS) as answered:
        page.keyboard.type(KEY)
        page.keyboard.press("Enter")
    assert answered.value.status == 200, answered.value.text()[:200]
    assert _wait_label(page) == answered.value.json()["label"]
    assert not key_input.is_visible()

    # Kept for this tab only, never in localStorage or the URL; sent on every call after it was given.
    stored = _storage(page)
    assert list(stored["session"].values()) == [KEY]
    assert KEY not in str(stored["local"]) and KEY not in stored["url"]
    classify = [key for path, key in calls if path == "/classify"]
    assert classify == [None, KEY]
    assert _unexpected(problems) == []


def test_wrong_key_shows_the_api_message_and_asks_again(viewer: Any, base_url: str, tmp_path: Path) -> None:
    page, problems, _ = viewer
    page.goto(base_url + "/")
    page.get_by_test_id("ap-file").set_input_files(str(_film(tmp_path)))
    page.get_by_test_id("analyze").click()
    key_input = page.get_by_test_id("api-key")
    key_input.wait_for(state="visible", timeout=TIMEOUT_MS)

    with page.expect_response(lambda r: r.url == f"{base_url}/classify", timeout=TIMEOUT_MS) as refused:
        key_input.fill(WRONG_KEY)
        page.get_by_test_id("api-key-submit").click()
    assert refused.value.status == 401
    assert refused.value.request.headers.get("x-api-key") == WRONG_KEY
    _wait_state(page, "error")
    status = page.get_by_test_id("status").text_content()
    assert "401" in status and UNAUTHORIZED_DETAIL in status
    key_input.wait_for(state="visible", timeout=TIMEOUT_MS)
    assert key_input.input_value() == ""
    assert _storage(page)["session"] == {}  # the refused key is not kept
    assert page.get_by_test_id("label").text_content() == ""

    key_input.fill(KEY)
    page.get_by_test_id("api-key-submit").click()
    assert _wait_label(page) in {"Normal", "Damaged"}
    assert _unexpected(problems) == []


def test_a_kept_key_goes_with_the_preview_and_the_seg(viewer: Any, base_url: str, tmp_path: Path) -> None:
    page, problems, calls = viewer
    page.goto(base_url + "/")
    page.evaluate("key => sessionStorage.setItem('spine-xray.api-key', key)", KEY)
    calls.clear()
    page.reload()  # a key given earlier in this tab: every call carries it, no prompt
    page.evaluate("() => window.spineViewer.ready")
    film = tmp_path / "film.dcm"
    film.write_bytes(dx_bytes(bits=16, view="AP"))  # DICOM: the browser cannot draw it, so /viewer/preview is called
    page.get_by_test_id("ap-file").set_input_files(str(film))
    page.get_by_test_id("analyze").click()
    _wait_label(page)
    with page.expect_download(timeout=TIMEOUT_MS):
        page.locator("#downloads button", has_text="AP DICOM SEG").click()
    _wait_state(page, "done")

    assert not page.get_by_test_id("api-key").is_visible()
    assert {path for path, _ in calls} == set(API_CALLS)
    assert [key for _, key in calls] == [KEY] * len(calls), calls
    assert _unexpected(problems) == []


def test_the_models_link_sends_the_key_and_asks_for_one_after_a_401(viewer: Any, base_url: str) -> None:
    page, problems, _ = viewer
    sent: list[str | None] = []
    page.on("request", lambda r: sent.append(r.headers.get("x-api-key")) if r.url == f"{base_url}/models" else None)
    page.goto(base_url + "/")
    page.evaluate("() => window.spineViewer.ready")
    page.get_by_role("link", name="Models (JSON)").click()
    key_input = page.get_by_test_id("api-key")
    key_input.wait_for(state="visible", timeout=TIMEOUT_MS)  # the plain GET was refused: the page asks
    with page.context.expect_page(timeout=TIMEOUT_MS) as opened:
        key_input.fill(KEY)
        page.get_by_test_id("api-key-submit").click()
    tab = opened.value
    tab.wait_for_load_state()
    models = json.loads(tab.locator("body").inner_text())
    assert {m["name"] for m in models["models"]} >= {"Ap_Vertebra", "Mask_Classifier"}
    assert sent == [None, KEY]
    tab.close()
    assert _unexpected(problems) == []
