"""The landmark model's first pass runs beside the U-Net: the same answer as one after the other, honest timings."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import spine_engine.analysis as analysis
from spine_engine.engine import Engine
from spine_engine.registry import ModelRegistry
from spine_engine.settings import EngineSettings
from spine_engine.study import Film, StudyRequest, analyze_study

ROOT = Path(__file__).resolve().parents[2]
FILM = ROOT / "docs" / "examples" / "synthetic_ap.jpg"


@pytest.fixture(scope="module")
def engine() -> Engine:
    registry = ModelRegistry.load(ROOT / "exported_models", providers=["CPUExecutionProvider"], warmup=False)
    return Engine(registry, EngineSettings().policy())


def _classify(engine: Engine):
    request = StudyRequest(films=(Film(FILM.read_bytes(), FILM.name, "AP"),), policy=engine.policy, max_pixels=10**9)
    return analyze_study(engine, request)


def test_the_overlapped_first_pass_gives_the_answer_of_the_sequential_one(engine: Engine, monkeypatch) -> None:
    started: list[bool] = []
    real_start = analysis.start_first_pass

    def counting_start(*args, **kwargs):
        future = real_start(*args, **kwargs)
        started.append(future is not None)
        return future

    monkeypatch.setattr(analysis, "start_first_pass", counting_start)
    overlapped = _classify(engine)
    assert started == [True]
    monkeypatch.setattr(analysis, "start_first_pass", lambda *args, **kwargs: None)
    sequential = _classify(engine)

    a, b = overlapped.views["AP"], sequential.views["AP"]
    assert a.reading.vertebrae is not None and len(a.reading.vertebrae.vertebrae) == 17
    np.testing.assert_array_equal(a.reading.vertebrae.corners(), b.reading.vertebrae.corners())
    assert a.reading.cobb.aasce_angles_deg == b.reading.cobb.aasce_angles_deg
    np.testing.assert_array_equal(a.result.masks["Ap_Vertebra"], b.result.masks["Ap_Vertebra"])
    assert overlapped.per_mask_raw == sequential.per_mask_raw
    assert a.reading.overlapped_ms >= 0.0 and b.reading.overlapped_ms == 0.0
    for study in (overlapped, sequential):
        timings = study.timings_ms
        # `measurement` is the geometry alone: the first pass that ran beside the U-Net is not taken off it twice
        # (it would go negative) nor left in it (it would exceed the network's own time on this AP film)
        assert 0.0 <= timings["measurement"] < timings["landmark_inference"]


def test_the_mask_measurement_starts_no_landmark_run(engine: Engine) -> None:
    policy = replace(engine.policy, measurement="mask")
    request = StudyRequest(films=(Film(FILM.read_bytes(), FILM.name, "AP"),), policy=policy, max_pixels=10**9)
    study = analyze_study(Engine(engine.registry, policy), request)
    assert "landmark_inference" not in study.timings_ms
    assert study.views["AP"].reading.overlapped_ms == 0.0
    assert analysis.start_first_pass(engine.registry, np.zeros((64, 32), np.uint8), policy) is None


def test_an_error_in_the_first_pass_is_raised_where_the_reading_reads_it() -> None:
    """The run happens on its own thread; its error must reach the request (and its error mapping), not vanish."""
    from types import SimpleNamespace

    from spine_engine.errors import InvalidInputError
    from spine_engine.measurement import landmark_reading, start_first_pass

    model = SimpleNamespace(input_hw=(64, 32), entry=SimpleNamespace(metrics={}))

    class Failing:
        def landmark_model(self):
            return model

        def infer(self, work):
            raise InvalidInputError("onnxruntime rejected the input: broken graph")

    policy = EngineSettings().policy()
    pixels = np.zeros((128, 64), np.uint8)
    future = start_first_pass(Failing(), pixels, policy)  # type: ignore[arg-type]
    assert future is not None
    with pytest.raises(InvalidInputError, match="broken graph"):
        landmark_reading(Failing(), pixels, policy, first_pass=future)  # type: ignore[arg-type]


def test_the_reading_gives_every_body_of_its_chain_in_the_films_pixels(engine: Engine) -> None:
    from spine_engine.decoding import decode_image
    from spine_engine.measurement import landmark_reading

    pixels = decode_image(FILM.read_bytes(), 10**9, FILM.name).pixels
    reading = landmark_reading(engine.registry, pixels, replace(engine.policy, tilt_model=False))
    assert reading is not None
    chain, served = reading.chain_corners(), reading.vertebrae.corners()
    assert chain is not None and served is not None and chain.shape[1:] == (4, 2) and len(chain) >= 17
    # the served T1..L5 are bodies of the chain (the tilt model off: the corners as the chain has them)
    distance = np.linalg.norm(served.mean(axis=1)[:, None] - chain.mean(axis=1)[None], axis=2).min(axis=1)
    detected = np.array([v.detected for v in reading.vertebrae.vertebrae])
    assert np.allclose(distance[detected], 0.0, atol=1e-6) and detected.sum() >= 15
    assert np.all(np.diff(chain.mean(axis=1)[:, 1]) > 0)  # top to bottom
