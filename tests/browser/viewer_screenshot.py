"""Screenshot of the viewer page on real models and films, for the README (docs/viewer.png).

Serves the given models directory (the committed `exported_models/` by default) in a live uvicorn on
127.0.0.1, opens `/` in Debian's chromium at 1280x800, analyses the given AP (and optional LAT) film and
saves the page. The picture is of the page; the film itself is never copied.

    python tests/browser/viewer_screenshot.py "../shared/data/aasce-train/images/<name> AP.jpg" --out docs/viewer.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # this checkout's `service`, whatever else the environment has installed

from spine_browser_testlib import CHROMIUM, launch, make_settings, offline_page, serve_live  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ap", type=Path, help="AP film (PNG, JPEG, TIFF or DICOM)")
    parser.add_argument("--lat", type=Path, help="lateral film (optional)")
    parser.add_argument("--models", type=Path, default=ROOT / "exported_models")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "viewer.png")
    parser.add_argument("--mode", choices=["fill", "outline"], default="fill")
    args = parser.parse_args()

    from playwright.sync_api import sync_playwright

    if not CHROMIUM.is_file():
        raise SystemExit(f"no chromium at {CHROMIUM}")
    with serve_live(make_settings(args.models.resolve())) as address, sync_playwright() as playwright:
        base_url = f"http://{address}"
        browser = launch(playwright)
        page, problems = offline_page(browser, base_url)
        page.goto(base_url + "/")
        page.get_by_test_id("ap-file").set_input_files(str(args.ap))
        if args.lat:
            page.get_by_test_id("lat-file").set_input_files(str(args.lat))
        page.get_by_test_id("analyze").click()
        page.wait_for_selector("[data-testid=status][data-state=done]", timeout=120_000)
        page.select_option("#mode", args.mode)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(args.out))
        browser.close()
        if problems:
            raise SystemExit(f"the page went wrong: {problems}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
