"""Widening a frozen-BatchNorm U-Net keeps its output and gives the new channels weights to train."""

from __future__ import annotations

import numpy as np

from training.models import build_unet
from training.widen import widen_unet


def _identity_bn_model(filters: int, seed: int):
    """A small U-Net shaped like one read back from an ONNX export: identity BatchNorm with a bias."""
    model = build_unet((32, 32), filters=filters, num_layers=2)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if not weights:
            continue
        if "bn" in layer.name:
            n = weights[0].shape[0]
            layer.set_weights([np.ones(n), rng.normal(size=n), np.zeros(n), np.full(n, 0.999)])
        else:
            layer.set_weights([rng.normal(scale=0.3, size=w.shape).astype(np.float32) for w in weights])
    return model


def test_widened_unet_computes_the_same_masks() -> None:
    old = _identity_bn_model(filters=4, seed=0)
    new = widen_unet(old, filters=6, num_layers=2, input_hw=(32, 32), seed=1)
    x = np.random.default_rng(2).random((3, 32, 32, 1), dtype=np.float32)
    want = np.asarray(old(x, training=False))
    got = np.asarray(new(x, training=False))
    assert new.count_params() > old.count_params()
    assert np.abs(got - want).max() < 1e-5
    assert want.std() > 0.01  # the check is not on a constant output


def test_new_channels_get_random_inputs_and_zero_outputs() -> None:
    old = _identity_bn_model(filters=4, seed=3)
    new = widen_unet(old, filters=6, num_layers=2, input_hw=(32, 32), seed=4)
    first = new.get_layer("down0_conv2").get_weights()[0]  # (3, 3, 6 in, 6 out)
    assert np.all(first[:, :, 4:, :4] == 0.0)  # new inputs do not reach old outputs
    assert np.all(first[:, :, :, 4:] != 0.0)  # new outputs read every input
    np.testing.assert_array_equal(first[:, :, :4, :4], old.get_layer("down0_conv2").get_weights()[0])
    concat_conv = new.get_layer("up0_conv1").get_weights()[0]  # input: 6 upsampled + 6 skip channels
    old_concat = old.get_layer("up0_conv1").get_weights()[0]  # input: 4 + 4
    np.testing.assert_array_equal(concat_conv[:, :, 6:10, :4], old_concat[:, :, 4:8, :4])
    assert np.all(concat_conv[:, :, 10:, :4] == 0.0) and np.all(concat_conv[:, :, 4:6, :4] == 0.0)
