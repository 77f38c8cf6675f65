"""Put an ONNX export's weights back into the Keras model it came from, and check that they are the same.

tf2onnx folds each inference-mode BatchNormalization into the preceding convolution (scaled kernel plus
bias). The Keras model is rebuilt from the manifest's `architecture_config`; each Conv2D,
Conv2DTranspose and Dense layer gets the ONNX initializer whose name carries the layer's name, the
folded bias goes into the following BatchNormalization (set to pass through) or the layer's own
bias. The result is only used when Keras and onnxruntime then agree on a random input
(`load_onnx_weights` returns the max abs difference); otherwise the caller keeps random weights and says so.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np


def _segments(name: str) -> list[str]:
    """'unet_1/down0_conv1_1/convolution/merged_input:0' -> ['unet_1', 'down0_conv1_1', 'convolution', 'merged_input']."""
    return name.split(":")[0].split("/")


def _candidates(layer_name: str, weights: dict[str, list[str]]) -> list[str]:
    """ONNX weights named after a Keras layer: tf2onnx writes `<layer>_<n>/...`; a bare `<layer>/` is the fallback.

    Suffixed names win, so a layer `conv2d` is not confused with a layer `conv2d_1` (written `conv2d_1_1`).
    """
    suffixed = re.compile(re.escape(layer_name) + r"_\d+")
    found = [w for w, segs in weights.items() if any(suffixed.fullmatch(s) for s in segs)]
    return found if len(found) == 1 else [w for w, segs in weights.items() if layer_name in segs]


def _all_layers(model) -> list:
    layers = []
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:  # nested model (ResNet50 backbone)
            layers.extend(_all_layers(layer))
        else:
            layers.append(layer)
    return layers


def _next_layers(layer) -> list:
    return [node.operation for node in getattr(layer, "_outbound_nodes", [])]


def _onnx_tables(path: str) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, list]]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    weight_nodes = {}
    consumers: dict[str, list] = {}
    for node in model.graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)
        if node.op_type in ("Conv", "ConvTranspose", "MatMul", "Gemm") and len(node.input) > 1 and node.input[1] in inits:
            weight_nodes[node.input[1]] = node
    return inits, weight_nodes, consumers


def _bias_of(node, inits, consumers) -> np.ndarray | None:
    if len(node.input) > 2 and node.input[2] in inits:
        return inits[node.input[2]].reshape(-1)
    nxt = consumers.get(node.output[0], [])
    if len(nxt) == 1 and nxt[0].op_type == "Add":
        other = [i for i in nxt[0].input if i != node.output[0]]
        if len(other) == 1 and other[0] in inits:
            return inits[other[0]].reshape(-1)
    return None


def _const_operand(node, tensor: str, inits: dict[str, np.ndarray]) -> np.ndarray | None:
    other = [i for i in node.input if i != tensor]
    return inits[other[0]].reshape(-1) if len(other) == 1 and other[0] in inits else None


def _affine_after(node, inits, consumers) -> tuple[np.ndarray, np.ndarray] | None:
    """(scale, shift) of a Mul [+ Add] by constants right after a convolution with its own bias input."""
    if len(node.input) < 3:  # without a bias input, a following Add is the (folded) bias: see _bias_of
        return None
    nxt = consumers.get(node.output[0], [])
    if len(nxt) != 1 or nxt[0].op_type != "Mul":
        return None
    scale = _const_operand(nxt[0], node.output[0], inits)
    if scale is None:
        return None
    after = consumers.get(nxt[0].output[0], [])
    shift = _const_operand(after[0], nxt[0].output[0], inits) if len(after) == 1 and after[0].op_type == "Add" else None
    return scale, (np.zeros_like(scale) if shift is None else shift)


def load_onnx_weights(model, onnx_path: str) -> dict[str, Any]:
    """Copy the weights; returns {'assigned': n layers, 'missing': [layer names]} (no parity check here)."""
    from keras import layers as L

    inits, weight_nodes, consumers = _onnx_tables(str(onnx_path))
    segments = {wname: _segments(wname) for wname in weight_nodes}
    assigned, missing = 0, []
    all_layers = _all_layers(model)
    for layer in all_layers:
        if isinstance(layer, L.BatchNormalization):
            eps = layer.epsilon
            gamma, beta, mean, var = (w.numpy() for w in layer.weights) if layer.scale and layer.center else (None,) * 4
            if gamma is None:
                missing.append(layer.name)
                continue
            layer.set_weights([np.ones_like(gamma), np.zeros_like(beta), np.zeros_like(mean), np.full_like(var, 1.0 - eps)])
    for layer in all_layers:
        if not isinstance(layer, (L.Conv2D, L.Conv2DTranspose, L.Dense)):
            continue
        candidates = _candidates(layer.name, segments)
        if len(candidates) != 1:
            missing.append(layer.name)
            continue
        wname = candidates[0]
        node = weight_nodes[wname]
        w = inits[wname]
        if isinstance(layer, L.Dense):
            kernel = w.T if node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute) else w
        else:
            kernel = np.transpose(w, (2, 3, 1, 0))  # [O, I, kh, kw] (Conv) / [I, O, kh, kw] (ConvTranspose) -> Keras
        if tuple(kernel.shape) != tuple(layer.kernel.shape):
            missing.append(layer.name)
            continue
        bias = _bias_of(node, inits, consumers)
        bias = np.zeros(kernel.shape[-2 if isinstance(layer, L.Conv2DTranspose) else -1], np.float32) if bias is None else bias
        followers = _next_layers(layer)
        bn = followers[0] if len(followers) == 1 and isinstance(followers[0], L.BatchNormalization) else None
        affine = _affine_after(node, inits, consumers) if bn is not None else None
        if bn is not None and affine is not None:
            # BatchNormalization kept by the export as Mul + Add after the convolution: y = (conv + b) * s + t
            scale, shift = affine
            g, b, m, v = bn.get_weights()
            scale = np.broadcast_to(scale, g.shape).astype(g.dtype)
            shift = np.broadcast_to(shift, b.shape).astype(b.dtype)
            if layer.use_bias:
                layer.set_weights([kernel, bias])
                bn.set_weights([scale, shift, m, v])
            else:
                layer.set_weights([kernel])
                bn.set_weights([scale, (bias * scale + shift).astype(b.dtype), m, v])
        elif layer.use_bias:
            layer.set_weights([kernel, bias])
        elif bn is not None:
            layer.set_weights([kernel])
            g, b, m, v = bn.get_weights()
            bn.set_weights([g, bias.astype(b.dtype), m, v])
        elif np.any(bias):
            missing.append(layer.name)
            continue
        else:
            layer.set_weights([kernel])
        assigned += 1
    return {"assigned": assigned, "missing": missing}


def parity_inputs(shape: tuple[int, ...], mask_like: bool, n: int = 2, seed: int = 1) -> np.ndarray:
    """Inputs for the parity check: uniform noise for a U-Net; for the classifier, what it is fed (filled
    ellipses, box-averaged masks), since 50 layers amplify float differences on noise far from its data."""
    rng = np.random.default_rng(seed)
    if not mask_like:
        return rng.random((n, *shape), dtype=np.float32)
    h, w = shape[0], shape[1]
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.zeros((n, *shape), np.float32)
    for i in range(n):
        cy, cx, ry, rx = (
            rng.uniform(0.3, 0.7) * h,
            rng.uniform(0.3, 0.7) * w,
            rng.uniform(0.1, 0.4) * h,
            rng.uniform(0.05, 0.3) * w,
        )
        out[i, ..., 0] = (((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0).astype(np.float32)
    return out


def keras_with_onnx_weights(config: dict[str, Any], onnx_path: str, tolerance: float = 1e-3) -> tuple[Any, dict[str, Any]]:
    """(Keras model, info). info['weights'] is 'onnx' when parity holds, else 'random' with the reason."""
    import onnxruntime as ort

    from benchmarks.synthetic import build_from_config

    model = build_from_config(config)
    info: dict[str, Any] = {"weights": "random"}
    try:
        loaded = load_onnx_weights(model, onnx_path)
    except Exception as exc:  # an export layout this loader does not know
        info["reason"] = f"loading failed: {exc}"
        return build_from_config(config), info
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    x = parity_inputs(model.input_shape[1:], mask_like="classifier" in str(config.get("builder", "")))
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    expected = np.asarray(model(x, training=False))
    diff = float(np.max(np.abs(expected - got)))
    info.update(parity_max_abs_diff=diff, assigned_layers=loaded["assigned"], unassigned_layers=loaded["missing"])
    if loaded["missing"] or not diff <= tolerance:
        info["reason"] = f"parity {diff:.3g} > {tolerance} or unassigned layers {loaded['missing'][:5]}"
        return build_from_config(config), info
    info["weights"] = "onnx"
    return model, info
