"""Helpers of the browser tests: Debian's chromium driven by Playwright (no browser download), the service on
the service tests' tiny generated models in a live uvicorn, pixel checks of the film canvas, and screenshots.

A uniquely named module (pytest's prepend import mode needs unique basenames across tests/). The tiny models
come from tests/service/spine_service_testlib.py, put on sys.path here so this folder also runs on its own.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

SERVICE_TESTS = Path(__file__).resolve().parents[1] / "service"
for _folder in (SERVICE_TESTS, SERVICE_TESTS / "dicom"):  # the service's and the DICOM tests' helpers
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

from spine_dicom_testlib import dx_bytes  # noqa: E402
from spine_service_testlib import (  # noqa: E402
    encode,
    make_dicom,
    make_settings,
    serve_live,
    spine_image,
    start_client,
    write_models_dir,
)

from spine_core.manifest import Manifest, load_manifest, save_manifest  # noqa: E402

__all__ = [
    "BACKGROUND_RGB",
    "CHROMIUM",
    "DEMO_STRUCTURE",
    "SCREENSHOTS",
    "chromium_or_skip",
    "demo_models_dir",
    "dx_bytes",
    "encode",
    "make_dicom",
    "make_settings",
    "non_background_fraction",
    "serve_live",
    "spine_image",
    "start_client",
    "write_models_dir",
]

DEMO_STRUCTURE = "Ap_Pedicle"  # marked validated: false by demo_models_dir


def demo_models_dir(folder: Path) -> Path:
    """The small generated models, with DEMO_STRUCTURE a demonstration model (the page must mark it)."""
    models = write_models_dir(folder)
    manifest = load_manifest(models)
    entries = [e.model_copy(update={"validated": e.name != DEMO_STRUCTURE}) for e in manifest.models]
    save_manifest(Manifest(created=manifest.created, models=entries), models)
    return models


# The system browser (apt-get install chromium; .ci/run does it). SPINE_CHROMIUM points elsewhere if needed.
CHROMIUM = Path(os.environ.get("SPINE_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI containers run as root, where chromium's sandbox cannot start
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",  # small /dev/shm in containers
    "--disable-component-update",
    "--no-first-run",
]
# CI keeps this folder (artifacts/ is gitignored); override with SPINE_SCREENSHOTS.
SCREENSHOTS = Path(os.environ.get("SPINE_SCREENSHOTS", Path(__file__).resolve().parents[2] / "artifacts" / "screenshots"))
# film.js BACKGROUND (#101418): what the canvas shows where there is no film.
BACKGROUND_RGB = (16, 20, 24)


def chromium_or_skip() -> Any:
    """Playwright's sync API, or a skip that says what is missing."""
    # .ci/run sets SPINE_REQUIRE_BROWSER=1: there a missing browser is a failure, not a quiet skip.
    give_up = pytest.fail if os.environ.get("SPINE_REQUIRE_BROWSER") == "1" else pytest.skip
    if not (CHROMIUM.is_file() or shutil.which(str(CHROMIUM))):
        give_up(f"no chromium at {CHROMIUM} (apt-get install chromium, or set SPINE_CHROMIUM)")
    try:
        import playwright.sync_api
    except ImportError:
        give_up("playwright is not installed (the dev extra)")
    return playwright.sync_api


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def offline_page(browser: Any, base_url: str, viewport: tuple[int, int] = (1280, 800)) -> tuple[Any, list[str]]:
    """A page that may reach only the service (any other request is aborted: an offline network), and the list of
    what went wrong in it: requests to other hosts, console errors and uncaught exceptions."""
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    problems: list[str] = []

    def guard(route: Any) -> None:
        url = route.request.url
        if url.startswith(base_url) or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            problems.append(f"request outside the service: {url}")
            route.abort()

    page.route("**/*", guard)
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"uncaught: {e}"))
    return page, problems


# Fraction of the film canvas's pixels that differ from the empty background (read back in the page).
_NON_BACKGROUND_JS = """([r, g, b]) => {
  const c = document.querySelector('[data-testid=film]');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i] - r) + Math.abs(d[i+1] - g) + Math.abs(d[i+2] - b) > 6) n++;
  return n / (d.length / 4);
}"""

# A digest of the canvas's pixels, to tell whether a control changed what is drawn.
_CANVAS_DIGEST_JS = """() => {
  const c = document.querySelector('[data-testid=film]');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let h = 0;
  for (let i = 0; i < d.length; i += 7) h = (h * 31 + d[i]) >>> 0;
  return h;
}"""


def non_background_fraction(page: Any) -> float:
    return float(page.evaluate(_NON_BACKGROUND_JS, list(BACKGROUND_RGB)))


def canvas_digest(page: Any) -> int:
    return int(page.evaluate(_CANVAS_DIGEST_JS))


def screenshot(page: Any, name: str, full_page: bool = True) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=full_page)
    return path


def browser_session() -> Iterator[Any]:
    """Playwright + chromium for a module (a generator for a fixture)."""
    sync_api = chromium_or_skip()
    with sync_api.sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            yield browser
        finally:
            browser.close()
