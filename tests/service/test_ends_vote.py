"""The ends model's vote in the level placement, as the service runs it on the committed models."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_tilt_second_look import read_example_film

from spine_core.structures import ENDS_MODEL_NAME
from spine_engine.registry import ModelRegistry

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def registry() -> ModelRegistry:
    # Its own load, warmed up (the shared committed_registry is not): the ends model's warm-up is checked below.
    registry = ModelRegistry.load(ROOT / "exported_models", providers=["CPUExecutionProvider"], warmup=True)
    if registry.ends_model() is None:
        pytest.skip("the committed manifest has no ends model")
    return registry


def test_the_committed_ends_model_is_servable_and_validated(registry: ModelRegistry) -> None:
    model = registry.ends_model()
    assert model is not None and model.warm and model.entry.validated
    assert model.entry.metrics["served_val_level_accuracy"] > model.entry.metrics["served_val_level_accuracy_without"]


def test_it_is_reported_when_it_votes_and_the_setting_turns_it_off(registry: ModelRegistry) -> None:
    with_model, without = read_example_film(registry, ends_model=True), read_example_film(registry, ends_model=False)
    assert ENDS_MODEL_NAME not in without.models_used and "ends_inference" not in without.timings_ms
    # the synthetic film's chain runs past T1..L5, so the placements differ and the model is asked
    assert ENDS_MODEL_NAME in with_model.models_used and with_model.timings_ms["ends_inference"] > 0.0
    a, b = with_model.views["AP"].reading.vertebrae.corners(), without.views["AP"].reading.vertebrae.corners()
    assert a is not None and b is not None and a.shape == b.shape == (17, 4, 2)
