"""scripts/level_sheets.py: the committed landmark model's chain of bodies, numbered on sheets for a reader."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from spine_service_testlib import load_script

from spine_engine.decoding import decode_image
from spine_engine.registry import ModelRegistry

ROOT = Path(__file__).resolve().parents[2]
FILM = ROOT / "docs" / "examples" / "synthetic_ap.jpg"


def _script():
    return load_script("level_sheets")


def test_sheets_number_the_bodies_top_to_bottom_on_the_film(tmp_path: Path) -> None:
    sheets = _script()
    registry = ModelRegistry.load(ROOT / "exported_models", providers=["CPUExecutionProvider"], warmup=False)
    pixels = decode_image(FILM.read_bytes(), max_pixels=10**9, filename=FILM.name).pixels
    boxes = sheets.chain_boxes(registry, pixels)
    assert boxes is not None and len(boxes) >= 17  # the synthetic film draws T1..L5 and more
    centres = boxes.mean(axis=1)
    assert (np.diff(centres[:, 1]) > 0).all()  # numbered top to bottom
    assert (centres >= 0).all() and (centres[:, 0] < pixels.shape[1]).all() and (centres[:, 1] < pixels.shape[0]).all()

    assert sheets.main([str(FILM.parent), "--out", str(tmp_path), "--only", FILM.name]) == 0
    for part in ("top", "bottom", "overview"):
        with Image.open(tmp_path / f"{FILM.stem}_{part}.png") as sheet:
            assert max(sheet.size) == sheets.SHEET_PX
    assert not (tmp_path / "synthetic_lat_top.png").exists()  # --only
    written = np.array(json.loads((tmp_path / f"{FILM.stem}_boxes.json").read_text()))
    assert written.shape == boxes.shape and np.allclose(written, boxes, atol=0.05)  # the numbered bodies
