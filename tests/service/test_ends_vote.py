"""The ends model's vote in the level placement, as the service runs it on the committed models."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from spine_core.structures import ENDS_MODEL_NAME
from spine_engine.engine import Engine
from spine_engine.registry import ModelRegistry
from spine_engine.settings import EngineSettings
from spine_engine.study import Film, StudyRequest, analyze_study

ROOT = Path(__file__).resolve().parents[2]
FILM = ROOT / "docs" / "examples" / "synthetic_ap.jpg"


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    registry = ModelRegistry.load(ROOT / "exported_models", providers=["CPUExecutionProvider"], warmup=True)
    if registry.ends_model() is None:
        pytest.skip("the committed manifest has no ends model")
    return registry


def _read(registry: ModelRegistry, ends_model: bool):
    policy = replace(EngineSettings().policy(), ends_model=ends_model)
    request = StudyRequest(films=(Film(FILM.read_bytes(), FILM.name, "AP"),), policy=policy, max_pixels=10**9)
    return analyze_study(Engine(registry, policy), request)


def test_the_committed_ends_model_is_servable_and_validated(registry: ModelRegistry) -> None:
    model = registry.ends_model()
    assert model is not None and model.warm and model.entry.validated
    assert model.entry.metrics["served_val_level_accuracy"] > model.entry.metrics["served_val_level_accuracy_without"]


def test_it_is_reported_when_it_votes_and_the_setting_turns_it_off(registry: ModelRegistry) -> None:
    with_model, without = _read(registry, True), _read(registry, False)
    assert ENDS_MODEL_NAME not in without.models_used and "ends_inference" not in without.timings_ms
    # the synthetic film's chain runs past T1..L5, so the placements differ and the model is asked
    assert ENDS_MODEL_NAME in with_model.models_used and with_model.timings_ms["ends_inference"] > 0.0
    a, b = with_model.views["AP"].reading.vertebrae.corners(), without.views["AP"].reading.vertebrae.corners()
    assert a is not None and b is not None and a.shape == b.shape == (17, 4, 2)
