"""A small ResNet for 48-112 px faces: residual blocks with batch norm, global pooling head."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, regularizers

from affectexp.models.layers import normalized_input, output_heads


def _conv_bn(x, filters: int, stride: int, regularizer, momentum: float, relu: bool = True):
    x = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, kernel_regularizer=regularizer)(x)
    x = layers.BatchNormalization(momentum=momentum)(x)
    return layers.Activation("relu")(x) if relu else x


def _residual_block(x, filters: int, stride: int, regularizer, momentum: float):
    shortcut = x
    y = _conv_bn(x, filters, stride, regularizer, momentum)
    y = _conv_bn(y, filters, 1, regularizer, momentum, relu=False)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False, kernel_regularizer=regularizer)(shortcut)
        shortcut = layers.BatchNormalization(momentum=momentum)(shortcut)
    return layers.Activation("relu")(layers.Add()([y, shortcut]))


def build_resnet(
    input_shape: tuple[int, int, int],
    num_classes: int,
    outputs: Sequence[str],
    widths: Sequence[int] = (16, 32, 64, 128),
    blocks_per_stage: int = 2,
    dropout: float = 0.3,
    l2: float = 1e-4,
    batch_norm_momentum: float = 0.9,
    stem_stride: int | None = None,
) -> keras.Model:
    """ResNet-style: a 3x3 stem, then stages of `blocks_per_stage` residual blocks, each stage
    after the first halving the resolution; global average pooling and a softmax head.

    stem_stride None picks 2 for faces of 80 px and more, 1 below.
    Returns a model mapping (batch, H, W, C) uint8-valued faces to (batch, num_classes).
    """
    if stem_stride is None:
        stem_stride = 2 if min(input_shape[:2]) >= 80 else 1
    regularizer = regularizers.L2(l2) if l2 > 0 else None
    inputs, x = normalized_input(input_shape)
    x = _conv_bn(x, widths[0], stem_stride, regularizer, batch_norm_momentum)
    for stage, width in enumerate(widths):
        for block in range(blocks_per_stage):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _residual_block(x, width, stride, regularizer, batch_norm_momentum)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, output_heads(x, num_classes, dropout, outputs), name="resnet")
