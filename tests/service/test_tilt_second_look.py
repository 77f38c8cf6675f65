"""The tilt model's second look at each vertebra, as the service runs it on the committed models."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from spine_core.structures import TILT_MODEL_NAME
from spine_core.vertebra_tilt import MAX_TURN_DEG, cobb_vectors
from spine_engine.engine import Engine
from spine_engine.registry import ModelRegistry
from spine_engine.settings import EngineSettings
from spine_engine.study import Film, StudyRequest, analyze_study

ROOT = Path(__file__).resolve().parents[2]
FILM = ROOT / "docs" / "examples" / "synthetic_ap.jpg"


@pytest.fixture(scope="module")
def registry(committed_registry: ModelRegistry) -> ModelRegistry:
    if committed_registry.tilt_model() is None:
        pytest.skip("the committed manifest has no tilt model")
    return committed_registry


def read_example_film(registry: ModelRegistry, **policy_changes: bool):
    """The shipped example AP film through the endpoint's analysis, the default policy with these changes."""
    policy = replace(EngineSettings().policy(), **policy_changes)
    request = StudyRequest(films=(Film(FILM.read_bytes(), FILM.name, "AP"),), policy=policy, max_pixels=10**9)
    return analyze_study(Engine(registry, policy), request)


def test_the_tilt_model_turns_each_vertebra_about_its_centre_and_is_reported(registry: ModelRegistry) -> None:
    with_model, without = read_example_film(registry, tilt_model=True), read_example_film(registry, tilt_model=False)
    turned, read = with_model.views["AP"].reading, without.views["AP"].reading
    a, b = turned.vertebrae.corners(), read.vertebrae.corners()
    assert a is not None and b is not None
    np.testing.assert_allclose(a.mean(axis=1), b.mean(axis=1), atol=1e-6)  # same centres: only the tilt changes
    turn = np.degrees(cobb_vectors(a)[0] - cobb_vectors(b)[0])
    assert np.abs(turn).max() <= MAX_TURN_DEG + 1e-6 and np.abs(turn).max() > 0.0
    assert TILT_MODEL_NAME in with_model.models_used and TILT_MODEL_NAME not in without.models_used
    assert with_model.timings_ms["tilt_inference"] > 0.0 and "tilt_inference" not in without.timings_ms
    assert turned.cobb is not None and turned.cobb.aasce_angles_deg != read.cobb.aasce_angles_deg
