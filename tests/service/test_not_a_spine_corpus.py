"""Inputs that are not AP spine radiographs get no confident label: the committed Ap_Vertebra U-Net and the
gate (spine_core.spine_gate) refuse every one of them, the endpoint's way (bytes -> decode -> segment -> gate).

The corpus is scripts/gate_check.py's: generated images (blank, noise, gradients, checkerboard, text-like
strokes, a spine drawn too small), scikit-image's sample photographs and micrographs, pydicom's CT, MR,
nuclear-medicine and ultrasound test files. The real-film check (none of the AASCE films, none of the
full-body films refused) needs ../shared/data and takes a few minutes.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from spine_service_testlib import load_script

from service.core.config import DEFAULT_MODELS_DIR
from spine_engine import ModelRegistry

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared" / "data"

pytestmark = pytest.mark.skipif(
    not (DEFAULT_MODELS_DIR / "manifest.json").is_file(),
    reason=f"{DEFAULT_MODELS_DIR}/manifest.json is absent: the trained models are not committed yet",
)


def _gate_check():
    return load_script("gate_check")


@pytest.fixture(scope="module")
def gate_check():
    return _gate_check()


@pytest.fixture(scope="module")
def registry(committed_registry: ModelRegistry) -> ModelRegistry:
    return committed_registry  # the session's one copy of the committed models


def test_no_corpus_input_passes_the_gate(gate_check, registry: ModelRegistry) -> None:
    pytest.importorskip("skimage", reason="scikit-image (the dev extra) ships the sample photographs")
    corpus = gate_check.build_corpus()
    kinds = {item.kind for item in corpus}
    assert kinds == {"generated", "skimage", "pydicom"} and len(corpus) >= 20
    rows = [gate_check.gate_features(registry, item) for item in corpus]
    passed = [(r["name"], r["features"]) for r in rows if r["ok"]]
    assert passed == []


@pytest.mark.shared_data
@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "aasce-train" / "images").is_dir(), reason="../shared/data/aasce-train is absent")
def test_no_real_film_is_refused(gate_check, registry: ModelRegistry) -> None:
    films = gate_check.real_film_inputs(SHARED / "aasce-train" / "images", "aasce")
    large = SHARED / "aasce-unlabelled"
    films += gate_check.real_film_inputs(large, "large") if large.is_dir() else []
    assert len(films) >= 481
    refused = [(r["name"], r["failed"]) for r in map(lambda f: gate_check.gate_features(registry, f), films) if not r["ok"]]
    assert refused == []
