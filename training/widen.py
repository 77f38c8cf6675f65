"""Widen a trained U-Net (`training.models.build_unet`) to more base filters without changing its output.

The wider model keeps every old channel in front and its weights as they were; the new channels get
random weights from all inputs, and the old channels get zero weights from the new ones. The function is
therefore unchanged at the start, and training can grow the new channels from there (gradients reach the
zero weights through the new channels' non-zero activations). Used to fine-tune a wider first stage from
the exported 16-filter one on a CPU, where training a wide U-Net from scratch is too slow.

Frozen-BatchNorm models only (weights read back from an ONNX export: identity BatchNorm carrying the
folded bias); the new channels' BatchNorm is identity too.
"""

from __future__ import annotations

import keras
import numpy as np

from training.models import build_unet


def _widened_kernel(
    old_kernel: np.ndarray,
    new_shape: tuple[int, ...],
    transpose: bool,
    concatenated_input: bool,
    rng: np.random.Generator,
    scale: float,
) -> np.ndarray:
    """Conv2D kernels are (kh, kw, in, out); Conv2DTranspose kernels (kh, kw, out, in).

    `concatenated_input`: the input is Concatenate([upsampled, skip]), each half widened on its own, so the
    old skip channels sit after all the new upsampled ones.
    """
    in_axis, out_axis = (3, 2) if transpose else (2, 3)
    n_in_old, n_in_new = old_kernel.shape[in_axis], new_shape[in_axis]
    if concatenated_input:
        half = np.arange(n_in_old // 2)
        in_map = np.concatenate([half, n_in_new // 2 + half])
    else:
        in_map = np.arange(n_in_old)
    fan_in = new_shape[0] * new_shape[1] * n_in_new
    kernel = rng.normal(scale=scale * np.sqrt(2.0 / fan_in), size=new_shape).astype(np.float32)
    n_out_old = old_kernel.shape[out_axis]
    # Old outputs: only their old inputs, with their old weights.
    old_out = [slice(None)] * 4
    old_out[out_axis] = slice(0, n_out_old)
    kernel[tuple(old_out)] = 0.0
    index = [slice(None)] * 4
    index[in_axis] = in_map
    index[out_axis] = slice(0, n_out_old)
    kernel[tuple(index)] = old_kernel
    return kernel


def widen_unet(
    old: keras.Model, filters: int, num_layers: int, input_hw: tuple[int | None, int | None], seed: int = 0, scale: float = 0.5
) -> keras.Model:
    """A `build_unet(input_hw, filters, num_layers)` model computing what `old` computes."""
    new = build_unet(input_hw, filters=filters, num_layers=num_layers)
    rng = np.random.default_rng(seed)
    for layer in new.layers:
        if not layer.weights:
            continue
        old_layer = old.get_layer(layer.name)
        old_weights = [np.asarray(w) for w in old_layer.get_weights()]
        if isinstance(layer, keras.layers.BatchNormalization):
            size, n = layer.gamma.shape[0], old_weights[0].shape[0]
            # gamma, beta, moving mean, moving variance: identity for the new channels (the variance is 1 - epsilon).
            fresh = [np.ones(size), np.zeros(size), np.zeros(size), np.full(size, old_weights[3][0])]
            for target, source in zip(fresh, old_weights, strict=True):
                target[:n] = source
            layer.set_weights(fresh)
            continue
        transpose = isinstance(layer, keras.layers.Conv2DTranspose)
        concatenated = layer.name.startswith("up") and layer.name.endswith("_conv1")
        kernel = _widened_kernel(old_weights[0], tuple(layer.kernel.shape), transpose, concatenated, rng, scale)
        weights = [kernel]
        if layer.use_bias:
            bias = np.zeros(layer.bias.shape, np.float32)
            bias[: old_weights[1].shape[0]] = old_weights[1]
            weights.append(bias)
        layer.set_weights(weights)
    return new
