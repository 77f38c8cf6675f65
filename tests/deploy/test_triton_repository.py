"""The model repository is a valid Triton repository: every config.pbtxt parses with Triton's own
ModelConfig protobuf and agrees with its ONNX graph (names, dims without the batch dim, data types)."""

from __future__ import annotations

from pathlib import Path

import pytest

from spine_core.manifest import MANIFEST_FILE, load_manifest
from spine_core.triton import CONFIG_FILE, write_triton_configs

ROOT = Path(__file__).resolve().parents[2]
EXPORTED = ROOT / "exported_models"

pytest.importorskip("onnx", reason="onnx (train extra) is needed to read the graphs")
pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] (dev extra) ships Triton's ModelConfig")


@pytest.mark.parametrize("tensorrt_fp16", [False, True])
def test_generated_configs_match_tiny_onnx_models(tiny_repository, check_triton_config, parse_model_config, tensorrt_fp16):
    models_dir, manifest = tiny_repository
    paths = write_triton_configs(models_dir, max_batch_size=4, tensorrt_fp16=tensorrt_fp16)
    assert sorted(p.relative_to(models_dir).as_posix() for p in paths) == sorted(
        f"{m.name}/{CONFIG_FILE}" for m in manifest.models
    )
    for entry in manifest.models:
        path = models_dir / entry.name / CONFIG_FILE
        check_triton_config(path, entry, models_dir)
        config = parse_model_config(path)
        assert config.max_batch_size == 4
        accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
        if tensorrt_fp16:
            assert [a.name for a in accelerators] == ["tensorrt"]
            assert accelerators[0].parameters["precision_mode"] == "FP16"
        else:
            assert not accelerators


def test_tiny_models_really_batch(tiny_repository, parse_model_config):
    """What max_batch_size promises: the ONNX files accept any batch size (run on the CPU provider)."""
    ort = pytest.importorskip("onnxruntime")
    import numpy as np

    models_dir, manifest = tiny_repository
    write_triton_configs(models_dir, max_batch_size=8)
    for entry in manifest.models:
        config = parse_model_config(models_dir / entry.name / CONFIG_FILE)
        session = ort.InferenceSession(str(models_dir / entry.file), providers=["CPUExecutionProvider"])
        batch = config.max_batch_size
        x = np.zeros([batch, *config.input[0].dims], dtype=np.float32)
        (y,) = session.run([entry.output_name], {entry.input_name: x})
        assert list(y.shape) == [batch, *config.output[0].dims]


@pytest.mark.skipif(
    not (EXPORTED / MANIFEST_FILE).exists(),
    reason=f"{EXPORTED.relative_to(ROOT)}/{MANIFEST_FILE} is absent: no exported models committed yet",
)
def test_committed_repository_is_a_valid_triton_repository(check_triton_config):
    manifest = load_manifest(EXPORTED)
    assert manifest.models, "manifest lists no model"
    for entry in manifest.models:
        config_path = EXPORTED / entry.name / CONFIG_FILE
        assert config_path.exists(), f"{config_path.relative_to(ROOT)} missing: run `python -m spine_core.triton exported_models`"
        check_triton_config(config_path, entry, EXPORTED)
    # Triton loads every sub-directory as a model, and with --disable-auto-complete-config one without
    # a config.pbtxt fails the server's start: the repository must hold the manifest's models only.
    subdirs = {p.name for p in EXPORTED.iterdir() if p.is_dir() and not p.name.startswith((".", "__"))}
    assert subdirs == {m.name for m in manifest.models}


def test_check_catches_a_config_that_disagrees_with_its_graph(tiny_repository, check_triton_config):
    """The config-vs-graph check has teeth: wrong dims, names and types are each reported."""
    models_dir, manifest = tiny_repository
    write_triton_configs(models_dir)
    entry = manifest.by_name()["Ap_Vertebra"]
    path = models_dir / entry.name / CONFIG_FILE
    good = path.read_text()
    for bad in (
        good.replace("dims: [ 16, 8, 1 ]", "dims: [ 8, 16, 1 ]", 1),
        good.replace('name: "input_image"', 'name: "image"', 1),
        good.replace("data_type: TYPE_FP32", "data_type: TYPE_FP16", 1),
        good.replace("max_batch_size: 8", "max_batch_size: 0", 1),
    ):
        assert bad != good
        path.write_text(bad)
        with pytest.raises(AssertionError):
            check_triton_config(path, entry, models_dir)
    path.write_text(good)
    check_triton_config(path, entry, models_dir)
