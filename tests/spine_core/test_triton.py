"""Unit tests of spine_core.triton: config.pbtxt text for Triton's ONNX Runtime backend."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from spine_core.manifest import Manifest, ModelEntry, save_manifest
from spine_core.triton import CONFIG_FILE, main, onnx_io_dtypes, triton_config, write_triton_configs

model_config_pb2 = pytest.importorskip(
    "tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] (dev extra) ships Triton's ModelConfig protobuf"
)
from google.protobuf import text_format  # noqa: E402  (after the importorskip that guards tritonclient)


def entry(**overrides) -> ModelEntry:
    fields = dict(
        name="Ap_Pedicle",
        kind="segmentation",
        structure="Ap_Pedicle",
        view="AP",
        file="Ap_Pedicle/1/model.onnx",
        sha256="0" * 64,
        input_name="input_image",
        output_name="mask",
        input_shape=[None, 512, 256, 1],
        output_shape=[None, 512, 256, 1],
        preprocessing={},
        architecture="unet",
        parameters=1,
        opset=17,
        training_data="test",
        split="test",
        epochs=1,
        validated=False,
    )
    fields.update(overrides)
    return ModelEntry(**fields)


def parse(text: str):
    return text_format.Parse(text, model_config_pb2.ModelConfig())


def test_batched_unet_config():
    config = parse(triton_config(entry()))
    assert config.name == "Ap_Pedicle"
    assert (config.platform, config.backend) == ("onnxruntime_onnx", "onnxruntime")
    assert config.max_batch_size == 8
    assert [(t.name, list(t.dims), model_config_pb2.DataType.Name(t.data_type)) for t in config.input] == [
        ("input_image", [512, 256, 1], "TYPE_FP32")
    ]
    assert [(t.name, list(t.dims)) for t in config.output] == [("mask", [512, 256, 1])]
    assert [(g.count, g.kind) for g in config.instance_group] == [(1, model_config_pb2.ModelInstanceGroup.KIND_GPU)]
    assert 0 < config.dynamic_batching.max_queue_delay_microseconds <= 1000
    assert not config.optimization.execution_accelerators.gpu_execution_accelerator
    assert not config.default_model_filename  # Triton's default, model.onnx
    (warmup,) = config.model_warmup
    assert warmup.batch_size == 1 and warmup.inputs["input_image"].zero_data
    assert list(warmup.inputs["input_image"].dims) == [512, 256, 1]


def test_classifier_and_options():
    e = entry(
        name="Mask_Classifier",
        kind="classification",
        structure=None,
        view=None,
        file="Mask_Classifier/1/model.onnx",
        input_name="mask_input",
        output_name="probabilities",
        input_shape=[None, 128, 64, 1],
        output_shape=[None, 2],
    )
    config = parse(triton_config(e, max_batch_size=32, tensorrt_fp16=True, instance_count=2, max_queue_delay_microseconds=100))
    assert config.max_batch_size == 32
    assert list(config.output[0].dims) == [2]
    assert config.instance_group[0].count == 2
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    (trt,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert trt.name == "tensorrt"
    assert trt.parameters["precision_mode"] == "FP16"
    assert int(trt.parameters["max_workspace_size_bytes"]) > 0


def test_fixed_batch_model_is_not_batched_by_triton():
    config = parse(triton_config(entry(input_shape=[1, 512, 256, 1], output_shape=[1, 512, 256, 1])))
    assert config.max_batch_size == 0
    assert list(config.input[0].dims) == [1, 512, 256, 1]
    assert not config.HasField("dynamic_batching")


def test_dynamic_spatial_dims_become_minus_one_and_skip_warmup():
    config = parse(triton_config(entry(input_shape=[None, None, None, 1], output_shape=[None, None, None, 1])))
    assert list(config.input[0].dims) == [-1, -1, 1]
    assert not config.model_warmup  # Triton cannot make zero data of an unknown shape


def test_other_file_name_is_declared():
    config = parse(triton_config(entry(file="Ap_Pedicle/1/unet.onnx")))
    assert config.default_model_filename == "unet.onnx"


def test_text_is_deterministic_and_names_are_quoted():
    e = entry(name='odd"name', input_name="in:0")
    assert triton_config(e) == triton_config(e)
    config = parse(triton_config(e))
    assert config.name == 'odd"name' and config.input[0].name == "in:0"


@pytest.mark.parametrize("kw", [{"max_batch_size": 0}, {"instance_count": 0}])
def test_bad_arguments(kw):
    with pytest.raises(ValueError):
        triton_config(entry(), **kw)


def _save(models_dir: Path, *entries: ModelEntry) -> None:
    save_manifest(Manifest(created="2026-01-01T00:00:00Z", models=list(entries)), models_dir)


def test_write_without_onnx_files_assumes_fp32_and_cli(tmp_path, capsys):
    _save(tmp_path, entry(), entry(name="Lat_Vertebra", structure="Lat_Vertebra", view="LAT", file="Lat_Vertebra/1/model.onnx"))
    assert main([str(tmp_path), "--max-batch-size", "4", "--tensorrt-fp16"]) == 0
    printed = capsys.readouterr().out.split()
    assert sorted(Path(p).parent.name for p in printed) == ["Ap_Pedicle", "Lat_Vertebra"]
    for name in ("Ap_Pedicle", "Lat_Vertebra"):
        config = parse((tmp_path / name / CONFIG_FILE).read_text())
        assert config.name == name and config.max_batch_size == 4
        assert config.input[0].data_type == model_config_pb2.TYPE_FP32


def test_write_rejects_a_file_outside_triton_layout(tmp_path):
    _save(tmp_path, entry(file="models/ap_pedicle.onnx"))
    with pytest.raises(ValueError, match="Triton's layout"):
        write_triton_configs(tmp_path)


def _onnx_identity(path: Path, name_in: str, name_out: str, elem_type: int) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import helper

    graph = helper.make_graph(
        [helper.make_node("Identity", [name_in], [name_out])],
        "identity",
        [helper.make_tensor_value_info(name_in, elem_type, ["n", 4, 2, 1])],
        [helper.make_tensor_value_info(name_out, elem_type, ["n", 4, 2, 1])],
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_data_types_come_from_the_onnx_file(tmp_path):
    onnx = pytest.importorskip("onnx")
    e = entry(input_shape=[None, 4, 2, 1], output_shape=[None, 4, 2, 1])
    _onnx_identity(tmp_path / e.file, "input_image", "mask", onnx.TensorProto.FLOAT16)
    assert onnx_io_dtypes(tmp_path / e.file) == {"input_image": "TYPE_FP16", "mask": "TYPE_FP16"}
    _save(tmp_path, e)
    (path,) = write_triton_configs(tmp_path)
    config = parse(path.read_text())
    assert config.input[0].data_type == config.output[0].data_type == model_config_pb2.TYPE_FP16
    assert config.model_warmup[0].inputs["input_image"].data_type == model_config_pb2.TYPE_FP16


def test_manifest_names_a_tensor_the_graph_lacks(tmp_path):
    onnx = pytest.importorskip("onnx")
    e = entry(input_shape=[None, 4, 2, 1], output_shape=[None, 4, 2, 1])
    _onnx_identity(tmp_path / e.file, "x", "mask", onnx.TensorProto.FLOAT)
    _save(tmp_path, e)
    with pytest.raises(ValueError, match="input_image"):
        write_triton_configs(tmp_path)


def test_without_onnx_package_types_default_to_fp32(tmp_path, monkeypatch):
    onnx = pytest.importorskip("onnx")
    e = entry(input_shape=[None, 4, 2, 1], output_shape=[None, 4, 2, 1])
    _onnx_identity(tmp_path / e.file, "input_image", "mask", onnx.TensorProto.FLOAT)
    _save(tmp_path, e)
    monkeypatch.setitem(sys.modules, "onnx", None)  # as in the serving image, which has no onnx
    assert onnx_io_dtypes(tmp_path / e.file) is None
    (path,) = write_triton_configs(tmp_path)
    assert parse(path.read_text()).input[0].data_type == model_config_pb2.TYPE_FP32
