from __future__ import annotations

from pathlib import Path

import pytest

import service.main
from service.core.config import DEFAULT_MODELS_DIR, Settings
from spine_engine.analysis import AnalysisPolicy


def test_defaults() -> None:
    s = Settings(_env_file=None)
    assert Path(service.main.__file__).resolve().parents[1] / "exported_models" == DEFAULT_MODELS_DIR
    assert s.models_dir == DEFAULT_MODELS_DIR
    assert s.providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert s.max_upload_bytes >= 100 * 1024 * 1024 and s.max_image_pixels >= 50_000_000
    assert s.intra_op_threads >= 1 and s.inter_op_threads == 1
    assert (s.host, s.port, s.require_gpu, s.aggregation) == ("0.0.0.0", 8000, False, "measured")
    # spine-evaluate scores AnalysisPolicy(): it must be what the endpoint runs with default settings.
    assert s.policy() == AnalysisPolicy()
    assert not s.demonstration_models and not s.demonstration_models_decide and s.spine_check and s.localisation


def test_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPINE_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("SPINE_PROVIDERS", "CPUExecutionProvider")
    monkeypatch.setenv("SPINE_REQUIRE_GPU", "true")
    monkeypatch.setenv("SPINE_MAX_UPLOAD_BYTES", "1000")
    monkeypatch.setenv("SPINE_INTRA_OP_THREADS", "3")
    monkeypatch.setenv("SPINE_LOG_LEVEL", "DEBUG")
    monkeypatch.setenv("SPINE_AGGREGATION", "mean")
    s = Settings(_env_file=None)
    assert s.models_dir == tmp_path and s.providers == ["CPUExecutionProvider"] and s.require_gpu
    assert (s.max_upload_bytes, s.intra_op_threads, s.log_level, s.aggregation) == (1000, 3, "debug", "mean")
    monkeypatch.setenv("SPINE_PROVIDERS", '["CUDAExecutionProvider", "CPUExecutionProvider"]')
    assert Settings(_env_file=None).providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setenv("SPINE_PROVIDERS", "CUDAExecutionProvider, CPUExecutionProvider")
    assert Settings(_env_file=None).providers == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPINE_AGGREGATION", "vote")
    with pytest.raises(ValueError, match="aggregation"):
        Settings(_env_file=None)


def test_cudnn_search_setting_reaches_the_registry(monkeypatch: pytest.MonkeyPatch, models_dir: Path) -> None:
    import service.core.state as state_module

    assert Settings(_env_file=None).cudnn_conv_algo_search == "EXHAUSTIVE"  # onnxruntime's own default
    monkeypatch.setenv("SPINE_CUDNN_CONV_ALGO_SEARCH", "HEURISTIC")
    settings = Settings(_env_file=None, models_dir=models_dir, providers=["CPUExecutionProvider"])
    seen: dict = {}
    real = state_module.ModelRegistry.load

    def spy(*args: object, **kwargs: object) -> object:
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(state_module.ModelRegistry, "load", spy)
    state = state_module.ModelState(settings)
    state.start(lambda registry: None)
    assert state.loaded.wait(30)
    assert seen["provider_options"] == {"CUDAExecutionProvider": {"cudnn_conv_algo_search": "HEURISTIC"}}
    monkeypatch.setenv("SPINE_CUDNN_CONV_ALGO_SEARCH", "FAST")
    with pytest.raises(ValueError, match="cudnn_conv_algo_search"):
        Settings(_env_file=None)


def test_inference_tuning_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings(_env_file=None)
    assert s.inference_slots >= 1 and s.inference_max_batch is None and not s.ort_spinning
    monkeypatch.setenv("SPINE_INFERENCE_SLOTS", "3")
    monkeypatch.setenv("SPINE_INFERENCE_MAX_BATCH", "auto")
    monkeypatch.setenv("SPINE_ORT_SPINNING", "1")
    tuning = Settings(_env_file=None).tuning()
    assert (tuning.inference_slots, tuning.max_batch, tuning.ort_spinning) == (3, None, True)
    monkeypatch.setenv("SPINE_INFERENCE_MAX_BATCH", "8")
    assert Settings(_env_file=None).tuning().max_batch == 8


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SPINE_INFERENCE_SLOTS", "many"),
        ("SPINE_INFERENCE_SLOTS", "-1"),
        ("SPINE_INFERENCE_MAX_BATCH", "0"),
        ("SPINE_ORT_SPINNING", "maybe"),
    ],
)
def test_bad_tuning_values_fail_like_every_setting(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    # They were read apart from the settings and a bad one was only logged; now start-up refuses it.
    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name.removeprefix("SPINE_").lower()):
        Settings(_env_file=None)


def test_tuning_reaches_the_registry(monkeypatch: pytest.MonkeyPatch, models_dir: Path) -> None:
    import service.core.state as state_module

    monkeypatch.setenv("SPINE_INFERENCE_SLOTS", "0")
    settings = Settings(_env_file=None, models_dir=models_dir, providers=["CPUExecutionProvider"])
    state = state_module.ModelState(settings)
    state.start(lambda registry: None)
    assert state.loaded.wait(30) and state.registry is not None
    assert state.registry.tuning == settings.tuning() and state.registry.scheduler.slots == 0
