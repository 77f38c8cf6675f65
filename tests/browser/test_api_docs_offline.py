"""/docs (Swagger UI) and /redoc (ReDoc) render in chromium with every request outside the service aborted:
their assets come from the package, not a CDN."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from spine_browser_testlib import make_settings, offline_page, screenshot, serve_live, write_models_dir

TIMEOUT_MS = 30_000
METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with serve_live(make_settings(write_models_dir(tmp_path_factory.mktemp("docs-models")))) as address:
        yield f"http://{address}"


def _operations(base_url: str) -> dict[tuple[str, str], dict[str, Any]]:
    paths = httpx.get(f"{base_url}/openapi.json").json()["paths"]
    return {(m.upper(), p): op for p, ops in paths.items() for m, op in ops.items() if m in METHODS}


def test_swagger_ui_lists_every_operation_offline(browser: Any, base_url: str) -> None:
    page, problems = offline_page(browser, base_url)
    try:
        page.goto(f"{base_url}/docs")
        page.wait_for_selector(".opblock", timeout=TIMEOUT_MS)
        shown = page.locator(".opblock").evaluate_all(
            """els => els.map(e => [e.querySelector('.opblock-summary-method').textContent.trim(),
                                   e.querySelector('.opblock-summary-path').dataset.path])"""
        )
        assert sorted(tuple(x) for x in shown) == sorted(_operations(base_url))
        assert ("POST", "/classify") in {tuple(x) for x in shown}
        screenshot(page, "docs-swagger-ui", full_page=False)
        assert problems == []
    finally:
        page.close()


def test_redoc_renders_offline(browser: Any, base_url: str) -> None:
    page, problems = offline_page(browser, base_url)
    try:
        page.goto(f"{base_url}/redoc")
        summary = _operations(base_url)[("POST", "/classify")]["summary"]
        page.get_by_role("heading", name=summary).first.wait_for(timeout=TIMEOUT_MS)
        screenshot(page, "docs-redoc", full_page=False)
        # ReDoc's one CDN request (its decorative logo) is stopped by the page's Content-Security-Policy, before
        # any network; the browser reports that as a console error, and nothing else may go wrong.
        others = [p for p in problems if not ("cdn.redoc.ly/redoc/logo-mini.svg" in p and "Content Security Policy" in p)]
        assert others == []
    finally:
        page.close()
