"""train_unet's fine-tuning mode: BatchNormalization frozen in inference mode, convolutions still learn."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="the train extra (tensorflow) is not installed")

import keras

from training.datasets import synthetic_spine
from training.train import FitConfig, train_unet

# `slow` (TensorFlow), by path: tests/conftest.py


def _data(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = [synthetic_spine(32, 16, seed + i) for i in range(n)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] > 0 for p in pairs])


def _bn_and_conv(model: keras.Model) -> tuple[list[np.ndarray], list[np.ndarray]]:
    bn = [w.numpy().copy() for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization) for w in layer.weights]
    conv = [layer.kernel.numpy().copy() for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    return bn, conv


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_batchnorm_keeps_bn_fixed_while_convolutions_learn(tmp_path, freeze: bool) -> None:
    x, y = _data(8, 0)
    xv, yv = _data(2, 100)
    cfg = FitConfig(epochs=1, batch_size=4, learning_rate=1e-2)
    # Same seed and architecture: the initial weights are identical in both runs.
    start = train_unet(x, y, xv, yv, tmp_path / "init", FitConfig(epochs=0), filters=4, num_layers=2)[0]
    bn0, conv0 = _bn_and_conv(start)
    start.save_weights(tmp_path / "init.weights.h5")
    model, result = train_unet(
        x, y, xv, yv, tmp_path / "run", cfg, filters=4, num_layers=2,
        init_weights=tmp_path / "init.weights.h5", freeze_batchnorm=freeze,
    )  # fmt: skip
    assert result.epochs_run == 1
    bn1, conv1 = _bn_and_conv(model)
    assert any(not np.allclose(a, b) for a, b in zip(conv0, conv1, strict=True))  # convolutions learned
    bn_unchanged = all(np.array_equal(a, b) for a, b in zip(bn0, bn1, strict=True))
    assert bn_unchanged == freeze  # frozen: gamma, beta and the moving statistics untouched
