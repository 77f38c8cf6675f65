"""Keras architectures: the per-structure U-Net and the ResNet50 mask classifier.

Pure Keras 3 (no `tensorflow` import), so the same code trains on the TensorFlow backend here
and on the torch backend on a GPU machine; `.weights.h5` files move between the two.

The U-Net follows keras-unet's `custom_unet` (conv-BN-ReLU pairs, max-pooling, dropout,
transposed-convolution upsampling, sigmoid head), written out here so the torch backend,
which keras-unet does not support, can train it too.
"""

from __future__ import annotations

import keras
from keras import layers

from spine_core.preprocessing import CLASSIFIER_INPUT_HW, UNET_INPUT_HW

UNET_INPUT_NAME = "image"
UNET_OUTPUT_NAME = "mask"
CLASSIFIER_INPUT_NAME = "mask"
CLASSIFIER_OUTPUT_NAME = "probabilities"


def _conv_block(x, filters: int, dropout: float, name: str, bn_momentum: float = 0.99):
    for i in (1, 2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, kernel_initializer="he_normal", name=f"{name}_conv{i}")(x)
        x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn{i}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{i}")(x)
        if i == 1 and dropout > 0:
            x = layers.Dropout(dropout, name=f"{name}_drop")(x)
    return x


def build_unet(
    input_hw: tuple[int | None, int | None] = UNET_INPUT_HW,
    filters: int = 16,
    num_layers: int = 4,
    dropout: float = 0.1,
    name: str = "unet",
    bn_momentum: float = 0.99,
) -> keras.Model:
    """U-Net with `num_layers` down-sampling steps; input NHWC float32 in [0, 1], output sigmoid.

    input_hw (None, None) builds a size-agnostic model (training on crops); sides must be multiples
    of 2**num_layers. bn_momentum only affects training (short runs want a faster-moving average).
    """
    inputs = keras.Input(shape=(*input_hw, 1), name=UNET_INPUT_NAME)
    x = inputs
    skips = []
    f = filters
    for depth in range(num_layers):
        x = _conv_block(x, f, dropout, f"down{depth}", bn_momentum)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{depth}")(x)
        f *= 2
    x = _conv_block(x, f, dropout, "bottleneck", bn_momentum)
    for depth in reversed(range(num_layers)):
        f //= 2
        x = layers.Conv2DTranspose(f, 2, strides=2, padding="same", name=f"up{depth}_tconv")(x)
        x = layers.Concatenate(name=f"up{depth}_concat")([x, skips[depth]])
        x = _conv_block(x, f, 0.0, f"up{depth}", bn_momentum)
    outputs = layers.Conv2D(1, 1, activation="sigmoid", name=UNET_OUTPUT_NAME)(x)
    return keras.Model(inputs, outputs, name=name)


def build_classifier(
    input_hw: tuple[int, int] = CLASSIFIER_INPUT_HW, dropout: float = 0.5, bn_momentum: float = 0.9
) -> keras.Model:
    """ResNet50 (random init: no ImageNet weights offline) on one mask -> softmax [Normal, Damaged].

    BatchNorm momentum is lowered from Keras' 0.99: with a few hundred training images an epoch is
    a dozen steps, and 0.99 leaves the moving statistics (used at inference) far behind the weights.
    """
    inputs = keras.Input(shape=(*input_hw, 1), name=CLASSIFIER_INPUT_NAME)
    backbone = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(*input_hw, 1), pooling="avg")
    for layer in backbone.layers:
        if isinstance(layer, layers.BatchNormalization):
            layer.momentum = bn_momentum
    x = backbone(inputs)
    x = layers.Dropout(dropout, name="head_dropout")(x)
    outputs = layers.Dense(2, activation="softmax", name=CLASSIFIER_OUTPUT_NAME)(x)
    return keras.Model(inputs, outputs, name="resnet50_mask_classifier")
