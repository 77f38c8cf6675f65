"""scripts/fullbody_finetune.py's training windows: a marked full-body film's window and its 17 labelled bodies."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from spine_service_testlib import load_script

from spine_engine.decoding import decode_image
from spine_engine.registry import ModelRegistry

ROOT = Path(__file__).resolve().parents[2]
FILMS = ROOT.parent / "shared" / "data" / "aasce-unlabelled"
FILM = "01-July-2019-6.jpg"

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(not (FILMS / FILM).is_file(), reason="../shared/data/aasce-unlabelled is absent (dev machines only)"),
]


def _script():
    return load_script("fullbody_finetune")


def test_a_marked_film_gives_its_window_and_seventeen_bodies_between_the_marks() -> None:
    script = _script()
    registry = ModelRegistry.load(ROOT / "exported_models", providers=["CPUExecutionProvider"], warmup=False)
    film = json.loads((ROOT / "docs" / "fov" / "large_film_marks.json").read_text())["films"][FILM]
    pixels = decode_image((FILMS / FILM).read_bytes(), max_pixels=10**9, filename=FILM).pixels
    got = script.window_sample(registry, pixels, film)
    assert not isinstance(got, str), got
    frame, corners = got
    assert frame.shape == (512, 256) and corners.shape == (17, 4, 2)
    assert (np.diff(corners.mean(axis=1)[:, 1]) > 0).all()
    # marks that enclose about half the spine: the film is left out, with the count said
    middle = (film["t1_top"][1] + film["l5_bottom"][1]) / 2
    left_out = script.window_sample(registry, pixels, {**film, "l5_bottom": [film["l5_bottom"][0], middle]})
    assert isinstance(left_out, str) and "bodies between the marked T1 and L5" in left_out
