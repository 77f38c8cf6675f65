"""Edit masks in a real browser: open a film, brush, erase, undo/redo, fill a polygon, save; the study lands on disk
in the course layout with exactly the drawn pixels (the page's pixel rule replayed here in numpy)."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from spine_browser_testlib import encode, make_settings, screenshot, serve_live, spine_image, write_models_dir

from training.datasets import read_course_dataset

TIMEOUT_MS = 30_000
FILM_HW = (600, 240)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    root = tmp_path_factory.mktemp("annotations")
    models = write_models_dir(tmp_path_factory.mktemp("annotate-models"))
    with serve_live(make_settings(models, annotations_dir=root)) as address:
        yield f"http://{address}", root


@pytest.fixture(scope="module")
def base_url(served: tuple[str, Path]) -> str:
    return served[0]


def replay(ops: list[dict], start: np.ndarray) -> np.ndarray:
    """annotate.js's pixel rule: a stamp takes the pixels whose centres lie within r of its centre; a polygon the
    pixels whose centres are inside it (even-odd scanline). Same float64 arithmetic, same order."""
    bits = start.copy()
    h, w = bits.shape
    for op in ops:
        if op["kind"] == "stroke":
            r = op["r"]
            for cx, cy in op["stamps"]:
                x0, x1 = max(0, math.floor(cx - r)), min(w - 1, math.ceil(cx + r))
                y0, y1 = max(0, math.floor(cy - r)), min(h - 1, math.ceil(cy + r))
                if x1 < x0 or y1 < y0:
                    continue
                dx = np.arange(x0, x1 + 1) + 0.5 - cx
                dy = np.arange(y0, y1 + 1)[:, None] + 0.5 - cy
                inside = dx * dx + dy * dy <= r * r
                bits[y0 : y1 + 1, x0 : x1 + 1][inside] = op["value"]
        else:
            pts = op["points"]
            ys = [p[1] for p in pts]
            for y in range(max(0, math.floor(min(ys))), min(h - 1, math.ceil(max(ys))) + 1):
                yc = y + 0.5
                xs = sorted(
                    a[0] + (yc - a[1]) * (b[0] - a[0]) / (b[1] - a[1])
                    for a, b in zip(pts, pts[1:] + pts[:1], strict=True)
                    if (a[1] <= yc) != (b[1] <= yc)
                )
                for k in range(0, len(xs) - 1, 2):
                    lo, hi = max(0, math.ceil(xs[k] - 0.5)), min(w - 1, math.ceil(xs[k + 1] - 0.5) - 1)
                    bits[y, lo : hi + 1] = op["value"]
    return bits


def _client_point(page: Any, fx: float, fy: float) -> tuple[float, float]:
    """Where the film's point (fx, fy) (fractions of its width and height) is on screen, from film.js's own fit."""
    return page.evaluate(
        """([fx, fy]) => {
        const f = window.spineViewer.film, r = f.canvas.getBoundingClientRect();
        return [r.left + f.tx + fx * f.film.width * f.scale, r.top + f.ty + fy * f.film.height * f.scale];
    }""",
        [fx, fy],
    )


def _stroke(page: Any, points: list[tuple[float, float]]) -> None:
    x, y = _client_point(page, *points[0])
    page.mouse.move(x, y)
    page.mouse.down()
    for p in points[1:]:
        page.mouse.move(*_client_point(page, *p), steps=6)
    page.mouse.up()


def _set_size(page: Any, size: int) -> None:
    page.get_by_test_id("brush-size").evaluate("(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", str(size))


def test_brush_erase_polygon_save_lands_exact_pixels(
    viewer: tuple[Any, list[str]], served: tuple[str, Path], tmp_path: Path
) -> None:
    page, problems = viewer
    base_url, root = served
    film = tmp_path / "film.png"
    film.write_bytes(encode(spine_image(*FILM_HW), "PNG"))
    api = httpx.post(
        f"{base_url}/classify", files={"ap": ("film.png", film.read_bytes())}, data={"include_masks": "true"}, timeout=60
    )
    model_area = next(m["area_px"] for v in api.json()["views"] for m in v["masks"] if m["structure"] == "Ap_Vertebra")
    assert model_area > 0

    page.goto(base_url + "/")
    page.get_by_test_id("ap-file").set_input_files(str(film))
    page.get_by_test_id("analyze").click()
    page.wait_for_selector("[data-testid=status][data-state=done]", timeout=TIMEOUT_MS)
    page.get_by_test_id("edit-masks").click()
    page.wait_for_function("() => window.spineAnnotate.startPixels('AP', 'Ap_Vertebra') !== null", timeout=TIMEOUT_MS)
    # Pre-annotation: the editing starts from the model's mask, the one the API returns.
    assert page.get_by_test_id("edit-structure").input_value() == "Ap_Vertebra"
    assert page.evaluate("window.spineAnnotate.startPixels('AP', 'Ap_Vertebra')") == model_area
    # ... or from empty, for a structure nobody drew yet.
    page.get_by_test_id("edit-structure").select_option("Ap_Pedicle")
    page.locator("#edit-start").select_option("empty")
    page.wait_for_function("() => window.spineAnnotate.startPixels('AP', 'Ap_Pedicle') === 0", timeout=TIMEOUT_MS)

    _set_size(page, 30)
    _stroke(page, [(0.3, 0.2), (0.5, 0.3), (0.7, 0.4)])
    _stroke(page, [(0.3, 0.7), (0.7, 0.8)])
    page.get_by_test_id("undo").click()  # the second stroke goes
    page.get_by_test_id("redo").click()  # and comes back
    page.get_by_test_id("undo").click()  # and goes again
    page.get_by_test_id("film").focus()
    page.keyboard.press("e")  # the eraser, by its shortcut
    assert page.get_by_test_id("eraser").get_attribute("aria-pressed") == "true"
    _set_size(page, 10)
    _stroke(page, [(0.5, 0.1), (0.5, 0.5)])
    page.get_by_test_id("polygon").click()
    for fx, fy in [(0.2, 0.55), (0.6, 0.55), (0.4, 0.65)]:
        page.mouse.click(*_client_point(page, fx, fy))
    page.keyboard.press("Enter")
    ops = page.evaluate("window.spineAnnotate.ops('AP', 'Ap_Pedicle')")
    assert [(op["kind"], op["value"]) for op in ops] == [("stroke", 1), ("stroke", 0), ("polygon", 1)]
    # The first stamp is where the mouse pressed (film.js's mapping from screen to film pixels).
    assert ops[0]["stamps"][0] == pytest.approx([0.3 * FILM_HW[1], 0.2 * FILM_HW[0]], abs=1.0)
    assert ops[0]["r"] == 15 and ops[1]["r"] == 5

    page.get_by_test_id("study-class").select_option("Damaged")
    page.get_by_test_id("annotator").fill("dr-browser")
    page.get_by_test_id("save-annotation").click()
    status = page.get_by_test_id("annotation-status")
    page.wait_for_selector("[data-testid=annotation-status][data-state=done]", timeout=TIMEOUT_MS)
    study_id = re.search(r"study (\S+)$", status.text_content()).group(1)
    screenshot(page, "annotate_saved")

    view = root / "Damaged" / study_id / "AP"
    assert sorted(p.name for p in view.iterdir()) == ["AP.jpg", "Ap_Pedicle.png", "Ap_Vertebra.png", "annotation.json"]
    with Image.open(view / "Ap_Pedicle.png") as img:
        saved = np.asarray(img.convert("L")) > 0
    expected = replay(ops, np.zeros(FILM_HW, dtype=bool))
    assert expected.sum() > 1000 and (expected != replay(ops[:1], np.zeros(FILM_HW, dtype=bool))).any()
    assert np.array_equal(saved, expected), f"{int((saved != expected).sum())} pixels differ from the drawn ones"
    with Image.open(view / "Ap_Vertebra.png") as img:
        assert int((np.asarray(img.convert("L")) > 0).sum()) == model_area  # opened, not edited: the model's mask
    sidecar = json.loads((view / "annotation.json").read_text())
    assert sidecar["annotator"] == "dr-browser"
    pedicle = sidecar["structures"]["Ap_Pedicle"]
    assert pedicle["pre_annotation"] == {
        "source": "empty",
        "model": None,
        "model_version": None,
        "model_sha256": None,
        "validated": None,
    }
    assert pedicle["edited_pixels"] == int(expected.sum()) and pedicle["pixels"] == int(expected.sum())
    vertebra = sidecar["structures"]["Ap_Vertebra"]
    assert vertebra["pre_annotation"]["model"] == "Ap_Vertebra" and vertebra["edited_pixels"] == 0
    (sample,) = read_course_dataset(root)
    assert sample.image().shape[:2] == FILM_HW
    assert not problems, problems
