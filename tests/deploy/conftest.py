"""Shared helpers of the deployment checks: tiny ONNX model repositories and the config-vs-graph check."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from spine_core.manifest import Manifest, ModelEntry, save_manifest, sha256_file

ROOT = Path(__file__).resolve().parents[2]


def venv_tool(name: str) -> str | None:
    """A console script installed next to this interpreter (the venv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name)


@pytest.fixture
def find_tool() -> Callable[[str], str | None]:
    return venv_tool


def _make_onnx(path: Path, kind: str, input_name: str, output_name: str, hw: tuple[int, int]) -> None:
    onnx = pytest.importorskip("onnx")
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    h, w = hw
    x = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["batch", h, w, 1])
    if kind == "segmentation":
        y = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", h, w, 1])
        nodes = [helper.make_node("Sigmoid", [input_name], [output_name])]
        initializers = []
    else:
        y = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, ["batch", 2])
        weights = numpy_helper.from_array(np.full((h * w, 2), 0.01, dtype=np.float32), "dense_w")
        nodes = [
            helper.make_node("Flatten", [input_name], ["flat"], axis=1),
            helper.make_node("MatMul", ["flat", "dense_w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], [output_name], axis=-1),
        ]
        initializers = [weights]
    graph = helper.make_graph(nodes, f"tiny_{kind}", [x], [y], initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))


def make_tiny_repository(models_dir: Path) -> Manifest:
    """Two tiny U-Net stand-ins and a classifier stand-in, in Triton's layout, with a manifest."""
    specs = [
        ("Ap_Vertebra", "segmentation", "AP", "input_image", "mask", (16, 8)),
        ("Lat_Disk_Height", "segmentation", "LAT", "input_image", "mask", (16, 8)),
        ("Mask_Classifier", "classification", None, "mask_input", "probabilities", (8, 4)),
    ]
    entries = []
    for name, kind, view, input_name, output_name, (h, w) in specs:
        rel = f"{name}/1/model.onnx"
        _make_onnx(models_dir / rel, kind, input_name, output_name, (h, w))
        entries.append(
            ModelEntry(
                name=name,
                kind=kind,
                structure=name if kind == "segmentation" else None,
                view=view,
                file=rel,
                sha256=sha256_file(models_dir / rel),
                input_name=input_name,
                output_name=output_name,
                input_shape=[None, h, w, 1],
                output_shape=[None, h, w, 1] if kind == "segmentation" else [None, 2],
                preprocessing={"name": "test"},
                threshold=0.5 if kind == "segmentation" else None,
                classes=["Normal", "Damaged"] if kind == "classification" else None,
                architecture="tiny",
                parameters=0,
                opset=17,
                training_data="none (test fixture)",
                split="none",
                epochs=0,
                validated=False,
            )
        )
    manifest = Manifest(created="2026-01-01T00:00:00Z", models=entries)
    save_manifest(manifest, models_dir)
    return manifest


@pytest.fixture
def tiny_repository(tmp_path: Path) -> tuple[Path, Manifest]:
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    return models_dir, make_tiny_repository(models_dir)


def _onnx_io(onnx_path: Path) -> dict[str, dict[str, tuple[int, list[int | None]]]]:
    """{"inputs"|"outputs": {name: (elem_type, dims with None for symbolic/unknown)}} of a graph."""
    onnx = pytest.importorskip("onnx")
    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}

    def describe(values) -> dict[str, tuple[int, list[int | None]]]:
        out = {}
        for v in values:
            if v.name in initializers:
                continue
            tensor = v.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tensor.shape.dim]
            out[v.name] = (tensor.elem_type, dims)
        return out

    return {"inputs": describe(model.graph.input), "outputs": describe(model.graph.output)}


def parse_model_config(path: Path):
    """Parse a config.pbtxt with Triton's own ModelConfig protobuf (shipped in tritonclient[grpc])."""
    model_config_pb2 = pytest.importorskip(
        "tritonclient.grpc.model_config_pb2", reason="tritonclient[grpc] (dev extra) provides Triton's ModelConfig protobuf"
    )
    from google.protobuf import text_format

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def check_config_against_onnx(config_path: Path, entry: ModelEntry, models_dir: Path) -> None:
    """Assert that a config.pbtxt names, shapes and types exactly what the ONNX file takes and returns."""
    from tritonclient.grpc import model_config_pb2

    from spine_core.triton import ONNX_TO_TRITON_DTYPE

    config = parse_model_config(config_path)
    onnx_path = models_dir / entry.file
    assert onnx_path.exists(), f"{onnx_path} missing"
    assert config_path.parent.name == entry.name
    assert config.name == entry.name, "Triton requires name == model directory"
    assert config.platform == "onnxruntime_onnx"
    assert config.backend == "onnxruntime"
    assert onnx_path.parent.name == entry.version and onnx_path.parent.parent == config_path.parent
    assert onnx_path.name == (config.default_model_filename or "model.onnx")

    graph = _onnx_io(onnx_path)
    batched = config.max_batch_size > 0
    for kind, tensors in (("inputs", config.input), ("outputs", config.output)):
        expected = graph[kind]
        assert sorted(t.name for t in tensors) == sorted(expected), f"{entry.name}: {kind} names differ from the ONNX graph"
        for tensor in tensors:
            elem_type, onnx_dims = expected[tensor.name]
            assert model_config_pb2.DataType.Name(tensor.data_type) == ONNX_TO_TRITON_DTYPE[elem_type], (
                f"{entry.name}.{tensor.name}: data_type differs from the ONNX element type {elem_type}"
            )
            if batched:
                assert onnx_dims and onnx_dims[0] is None, f"{entry.name}.{tensor.name}: batching needs a dynamic first ONNX dim"
                onnx_dims = onnx_dims[1:]
            # As Triton's ONNX Runtime backend compares them: a fixed ONNX dim must be equal, a dynamic
            # one (symbolic or unknown) accepts -1 or any size the config fixes.
            dims = list(tensor.dims)
            assert len(dims) == len(onnx_dims) and all(d is None or c == d for c, d in zip(dims, onnx_dims, strict=True)), (
                f"{entry.name}.{tensor.name}: dims {dims} vs ONNX {onnx_dims}"
            )
            assert all(c == -1 or c > 0 for c in dims)
    assert config.input[0].name == entry.input_name and config.output[0].name == entry.output_name

    assert len(config.instance_group) >= 1
    assert all(g.kind == model_config_pb2.ModelInstanceGroup.KIND_GPU for g in config.instance_group)
    if batched:
        assert config.HasField("dynamic_batching")
        assert 0 < config.dynamic_batching.max_queue_delay_microseconds <= 10_000
    for accelerator in config.optimization.execution_accelerators.gpu_execution_accelerator:
        assert accelerator.name == "tensorrt"
        assert accelerator.parameters.get("precision_mode", "FP32") in {"FP32", "FP16"}


@pytest.fixture(name="parse_model_config")
def parse_model_config_fixture() -> Callable[[Path], object]:
    return parse_model_config


@pytest.fixture
def check_triton_config() -> Callable[[Path, ModelEntry, Path], None]:
    return check_config_against_onnx
