"""FLOPs per inference counted from an ONNX graph, and the machine's float32 matmul peak measured with numpy.

Counted: Conv, ConvTranspose, MatMul, Gemm (2 FLOPs per multiply-accumulate, bias adds included) and
the element-wise/normalisation/pooling ops at one FLOP per output element (they are a few percent of
a CNN's work). Shapes come from ONNX shape inference with the batch dimension fixed.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

# Cheap ops counted at one FLOP per output element (activations, adds, pooling, normalisation).
ELEMENTWISE_OPS = {
    "Relu",
    "Sigmoid",
    "Add",
    "Mul",
    "Sub",
    "Div",
    "Softmax",
    "MaxPool",
    "AveragePool",
    "GlobalAveragePool",
    "BatchNormalization",
    "Clip",
    "LeakyRelu",
    "Tanh",
    "ReduceMean",
}


def _shape_map(model) -> dict[str, list[int]]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    shapes: dict[str, list[int]] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in vi.type.tensor_type.shape.dim]
        shapes[vi.name] = dims
    for init in inferred.graph.initializer:
        shapes[init.name] = list(init.dims)
    return shapes


def _fix_batch(model, batch: int):
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if dims:
            dims[0].ClearField("dim_param")
            dims[0].dim_value = batch
    return model


def count_flops(onnx_path: Path | str, batch: int = 1) -> dict[str, Any]:
    """{'total': FLOPs for one call with `batch` inputs, 'per_image', 'by_op': {op: FLOPs}, 'ops': node counts}."""
    import onnx

    model = _fix_batch(onnx.load(str(onnx_path)), batch)
    shapes = _shape_map(model)
    attrs = lambda node: {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}  # noqa: E731
    by_op: Counter[str] = Counter()
    ops: Counter[str] = Counter()
    unknown: list[str] = []
    for node in model.graph.node:
        ops[node.op_type] += 1
        out = shapes.get(node.output[0]) if node.output else None
        if out is not None and any(d < 0 for d in out):
            out = None
        if node.op_type == "Conv":
            w = shapes.get(node.input[1])
            if out is None or w is None:
                unknown.append(node.name)
                continue
            # out [N, Cout, H, W], w [Cout, Cin/group, kh, kw]
            macs = int(np.prod(out)) * int(np.prod(w[1:]))
            by_op["Conv"] += 2 * macs + (int(np.prod(out)) if len(node.input) > 2 and node.input[2] else 0)
        elif node.op_type == "ConvTranspose":
            x, w = shapes.get(node.input[0]), shapes.get(node.input[1])
            if x is None or w is None or any(d < 0 for d in x) or out is None:
                unknown.append(node.name)
                continue
            # every input element is multiplied into Cout/group * kh * kw outputs; w [Cin, Cout/group, kh, kw]
            macs = int(np.prod(x)) * int(np.prod(w[1:]))
            by_op["ConvTranspose"] += 2 * macs + (int(np.prod(out)) if len(node.input) > 2 and node.input[2] else 0)
        elif node.op_type in ("MatMul", "Gemm"):
            a, b = shapes.get(node.input[0]), shapes.get(node.input[1])
            if a is None or b is None or out is None or any(d < 0 for d in a):
                unknown.append(node.name)
                continue
            trans_a = node.op_type == "Gemm" and attrs(node).get("transA", 0)
            k = a[-2] if trans_a else a[-1]
            by_op[node.op_type] += 2 * int(np.prod(out)) * int(k) + (
                int(np.prod(out)) if node.op_type == "Gemm" and len(node.input) > 2 else 0
            )
        elif node.op_type in ELEMENTWISE_OPS and out is not None:
            by_op["elementwise"] += int(np.prod(out))
    total = int(sum(by_op.values()))
    return {
        "batch": batch,
        "total": total,
        "per_image": total / batch,
        "by_op": dict(by_op),
        "ops": dict(ops),
        "uncounted_nodes": unknown,
        "transpose_nodes": ops.get("Transpose", 0),
    }


def matmul_peak(n: int = 2048, repeats: int = 10, min_seconds: float = 0.5) -> dict[str, Any]:
    """Best and median GFLOP/s of a float32 n x n matmul with numpy's BLAS, after one warm-up call."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)
    flops = 2.0 * n**3
    rates = []
    started = time.perf_counter()
    while len(rates) < repeats or (time.perf_counter() - started) < min_seconds:
        t0 = time.perf_counter()
        np.matmul(a, b, out=out)
        rates.append(flops / (time.perf_counter() - t0) / 1e9)
        if len(rates) >= 10 * repeats:
            break
    blas = _blas_name()
    return {
        "n": n,
        "runs": len(rates),
        "best_gflops": max(rates),
        "median_gflops": float(np.median(rates)),
        "blas": blas,
    }


def _blas_name() -> str:
    try:
        from threadpoolctl import threadpool_info  # optional

        infos = [
            f"{i.get('internal_api')} {i.get('version')} ({i.get('num_threads')} threads)"
            for i in threadpool_info()
            if i.get("user_api") == "blas"
        ]
        if infos:
            return "; ".join(infos)
    except Exception:
        pass
    try:
        config = np.show_config(mode="dicts")  # numpy >= 1.26
        blas = config.get("Build Dependencies", {}).get("blas", {})
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:
        return "unknown"
