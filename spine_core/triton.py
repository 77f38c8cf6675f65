"""Triton model-repository configs (config.pbtxt) for the exported ONNX models.

`exported_models/` is laid out as an NVIDIA Triton Inference Server model repository::

    exported_models/
      manifest.json                 # ours; Triton only looks at sub-directories
      Ap_Vertebra/
        config.pbtxt                # written here
        1/model.onnx
      ...

so the same directory can be served by our FastAPI service or by `tritonserver --model-repository`.
The config uses the ONNX Runtime backend, lets Triton batch requests of the models whose ONNX batch
dimension is dynamic, places instances on the GPU and can ask for TensorRT FP16. Names and dims come
from the manifest (without the batch dimension); data types are read from the ONNX file when the
`onnx` package is importable (training installs it) and are float32 otherwise, which is what every
model of this project takes and returns.

No TensorFlow and no web framework is imported here: training calls `write_triton_configs` after
exporting, and `python -m spine_core.triton MODELS_DIR` regenerates the configs of a repository.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from spine_core.manifest import ModelEntry, load_manifest

CONFIG_FILE = "config.pbtxt"
DEFAULT_MAX_BATCH_SIZE = 8
# Long enough for concurrent requests to meet in one batch, short enough not to show in latency
# (one U-Net pass on a GPU takes milliseconds).
DEFAULT_MAX_QUEUE_DELAY_US = 500
TENSORRT_WORKSPACE_BYTES = 1 << 30

# ONNX TensorProto.DataType numbers -> Triton data types (model_config.proto's DataType).
ONNX_TO_TRITON_DTYPE: dict[int, str] = {
    1: "TYPE_FP32",
    2: "TYPE_UINT8",
    3: "TYPE_INT8",
    4: "TYPE_UINT16",
    5: "TYPE_INT16",
    6: "TYPE_INT32",
    7: "TYPE_INT64",
    8: "TYPE_STRING",
    9: "TYPE_BOOL",
    10: "TYPE_FP16",
    11: "TYPE_FP64",
    12: "TYPE_UINT32",
    13: "TYPE_UINT64",
    16: "TYPE_BF16",
}


def _dims(shape: Sequence[int | None], batched: bool) -> list[int]:
    """Manifest shape -> Triton dims: batch dimension dropped when batched, other unknowns are -1."""
    dims = list(shape[1:] if batched else shape)
    return [-1 if d is None or d < 0 else int(d) for d in dims]


def _is_batched(entry: ModelEntry) -> bool:
    """Triton batches a model only when both its input and output lead with a dynamic dimension."""
    return bool(entry.input_shape) and bool(entry.output_shape) and entry.input_shape[0] is None and entry.output_shape[0] is None


def _dims_text(dims: Sequence[int]) -> str:
    return "[ " + ", ".join(str(d) for d in dims) + " ]"


def _q(text: str) -> str:
    """A protobuf text-format string literal."""
    return json.dumps(text)


def onnx_io_dtypes(onnx_path: Path) -> dict[str, str] | None:
    """{tensor name: Triton data type} of an ONNX graph's inputs and outputs, or None without `onnx`."""
    try:
        import onnx  # the train extra has it; the serve extra does not need it
    except ImportError:
        return None
    model = onnx.load(str(onnx_path), load_external_data=False)
    initializers = {init.name for init in model.graph.initializer}
    types: dict[str, str] = {}
    for value in [*model.graph.input, *model.graph.output]:
        if value.name in initializers:
            continue
        elem = value.type.tensor_type.elem_type
        if elem not in ONNX_TO_TRITON_DTYPE:
            raise ValueError(f"{onnx_path}: tensor {value.name!r} has ONNX element type {elem}, which Triton cannot serve")
        types[value.name] = ONNX_TO_TRITON_DTYPE[elem]
    return types


def triton_config(
    entry: ModelEntry,
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
    tensorrt_fp16: bool = False,
    *,
    instance_count: int = 1,
    max_queue_delay_microseconds: int = DEFAULT_MAX_QUEUE_DELAY_US,
    input_dtype: str = "TYPE_FP32",
    output_dtype: str = "TYPE_FP32",
    warmup: bool = True,
) -> str:
    """The config.pbtxt text (protobuf text format of Triton's ModelConfig) for one manifest entry.

    Models whose ONNX batch dimension is dynamic get `max_batch_size` and dynamic batching; a model
    with a fixed leading dimension gets `max_batch_size: 0` and its full shape as dims. With
    `tensorrt_fp16`, ONNX Runtime's TensorRT execution provider is asked for in FP16 (Triton falls back
    to the CUDA provider for whatever TensorRT cannot take). `warmup` makes Triton run one zero batch
    per instance before reporting the model ready, as our own service does.
    """
    if max_batch_size < 1:
        raise ValueError("max_batch_size must be >= 1 (the batch size is fixed to 0 only for models without a dynamic batch dim)")
    if instance_count < 1:
        raise ValueError("instance_count must be >= 1")
    batched = _is_batched(entry)
    input_dims = _dims(entry.input_shape, batched)
    output_dims = _dims(entry.output_shape, batched)
    model_file = Path(entry.file).name

    lines = [
        f"# Generated by spine_core.triton from manifest.json ({entry.kind}"
        + (f", {entry.structure}, view {entry.view}" if entry.structure else "")
        + f", sha256 {entry.sha256[:12]}); regenerate with `python -m spine_core.triton MODELS_DIR`.",
        f"name: {_q(entry.name)}",
        'platform: "onnxruntime_onnx"',
        'backend: "onnxruntime"',
        f"max_batch_size: {max_batch_size if batched else 0}",
    ]
    if model_file != "model.onnx":
        lines.append(f"default_model_filename: {_q(model_file)}")
    lines += [
        "version_policy: { latest: { num_versions: 1 } }",
        "input [",
        "  {",
        f"    name: {_q(entry.input_name)}",
        f"    data_type: {input_dtype}",
        f"    dims: {_dims_text(input_dims)}",
        "  }",
        "]",
        "output [",
        "  {",
        f"    name: {_q(entry.output_name)}",
        f"    data_type: {output_dtype}",
        f"    dims: {_dims_text(output_dims)}",
        "  }",
        "]",
        "instance_group [",
        "  {",
        f"    count: {instance_count}",
        "    kind: KIND_GPU",
        "  }",
        "]",
    ]
    if batched:
        lines += [
            "dynamic_batching {",
            f"  max_queue_delay_microseconds: {max_queue_delay_microseconds}",
            "}",
        ]
    if tensorrt_fp16:
        lines += [
            "optimization {",
            "  execution_accelerators {",
            "    gpu_execution_accelerator: [",
            "      {",
            '        name: "tensorrt"',
            '        parameters: { key: "precision_mode" value: "FP16" }',
            f'        parameters: {{ key: "max_workspace_size_bytes" value: "{TENSORRT_WORKSPACE_BYTES}" }}',
            "      }",
            "    ]",
            "  }",
            "}",
        ]
    if warmup and all(d > 0 for d in input_dims):
        lines += [
            "model_warmup [",
            "  {",
            '    name: "zeros"',
            "    batch_size: 1",
            "    inputs: {",
            f"      key: {_q(entry.input_name)}",
            "      value: {",
            f"        data_type: {input_dtype}",
            f"        dims: {_dims_text(input_dims)}",
            "        zero_data: true",
            "      }",
            "    }",
            "  }",
            "]",
        ]
    return "\n".join(lines) + "\n"


def write_triton_configs(models_dir: Path, **kw: object) -> list[Path]:
    """Write `<models_dir>/<name>/config.pbtxt` for every model in the manifest; returns the paths.

    Keyword arguments go to `triton_config` (max_batch_size, tensorrt_fp16, instance_count, ...).
    Data types come from each ONNX file when it exists and `onnx` is importable.
    """
    models_dir = Path(models_dir)
    manifest = load_manifest(models_dir)
    written: list[Path] = []
    for entry in manifest.models:
        model_dir = models_dir / entry.name
        expected = Path(entry.name) / entry.version / Path(entry.file).name
        if Path(entry.file) != expected:
            raise ValueError(f"{entry.name}: file {entry.file!r} is not in Triton's layout {expected.as_posix()!r}")
        options = dict(kw)
        onnx_path = models_dir / entry.file
        dtypes = onnx_io_dtypes(onnx_path) if onnx_path.exists() else None
        if dtypes is not None:
            for name in (entry.input_name, entry.output_name):
                if name not in dtypes:
                    raise ValueError(f"{onnx_path}: the manifest names tensor {name!r}, the ONNX graph has {sorted(dtypes)}")
            options.setdefault("input_dtype", dtypes[entry.input_name])
            options.setdefault("output_dtype", dtypes[entry.output_name])
        model_dir.mkdir(parents=True, exist_ok=True)
        path = model_dir / CONFIG_FILE
        path.write_text(triton_config(entry, **options))  # type: ignore[arg-type]
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m spine_core.triton",
        description="Write Triton config.pbtxt files for every model listed in MODELS_DIR/manifest.json.",
    )
    parser.add_argument("models_dir", type=Path, help="model repository holding manifest.json (e.g. exported_models)")
    parser.add_argument("--max-batch-size", type=int, default=DEFAULT_MAX_BATCH_SIZE)
    parser.add_argument("--instance-count", type=int, default=1, help="model instances per GPU")
    parser.add_argument("--max-queue-delay-us", type=int, default=DEFAULT_MAX_QUEUE_DELAY_US)
    parser.add_argument("--tensorrt-fp16", action="store_true", help="ask ONNX Runtime's TensorRT provider for FP16")
    parser.add_argument("--no-warmup", action="store_true")
    args = parser.parse_args(argv)
    paths = write_triton_configs(
        args.models_dir,
        max_batch_size=args.max_batch_size,
        tensorrt_fp16=args.tensorrt_fp16,
        instance_count=args.instance_count,
        max_queue_delay_microseconds=args.max_queue_delay_us,
        warmup=not args.no_warmup,
    )
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
