"""VGG-style blocks: stacks of 3x3 convolutions with batch norm, max-pooling between blocks."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, regularizers

from affectexp.models.layers import normalized_input, output_heads


def build_vgg(
    input_shape: tuple[int, int, int],
    num_classes: int,
    outputs: Sequence[str],
    widths: Sequence[int] = (32, 64, 128, 256),
    convs_per_block: int = 2,
    dense_units: int = 256,
    dropout: float = 0.4,
    l2: float = 1e-4,
    batch_norm_momentum: float = 0.9,
) -> keras.Model:
    """VGG-style network with a global-average-pooled dense head (works at any face size).

    Returns a model mapping (batch, H, W, C) uint8-valued faces to (batch, num_classes).
    """
    regularizer = regularizers.L2(l2) if l2 > 0 else None
    inputs, x = normalized_input(input_shape)
    for width in widths:
        for _ in range(convs_per_block):
            x = layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_regularizer=regularizer)(x)
            x = layers.BatchNormalization(momentum=batch_norm_momentum)(x)
            x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dense(dense_units, activation="relu", kernel_regularizer=regularizer)(x)
    return keras.Model(inputs, output_heads(x, num_classes, dropout, outputs), name="vgg")
