"""The seed notebook's CNN done right: conv blocks with batch norm, pooling, dropout, dense head."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers, regularizers

from affectexp.models.layers import normalized_input, output_heads


def build_simple_cnn(
    input_shape: tuple[int, int, int],
    num_classes: int,
    outputs: Sequence[str],
    widths: Sequence[int] = (32, 64, 128),
    convs_per_block: int = 1,
    dense_units: int = 256,
    dropout: float = 0.5,
    l2: float = 1e-4,
    batch_norm_momentum: float = 0.9,
    stem_stride: int | None = None,
) -> keras.Model:
    """A plain CNN: per block, `convs_per_block` 3x3 conv + batch norm + ReLU, then max-pool.

    Args:
        input_shape: (H, W, C) of the faces as stored in the cache (uint8 values 0-255).
        widths: filters per block.
        batch_norm_momentum: 0.9, not Keras' 0.99: with few steps per epoch the moving
            statistics otherwise lag and validation reads chance while training progresses.
        stem_stride: stride of the first convolution; None picks 2 for faces of 80 px and
            more (a Flatten over 96 px feature maps does not train) and 1 below.
    Returns:
        A model mapping (batch, H, W, C) faces to (batch, num_classes) probabilities.
    """
    if stem_stride is None:
        stem_stride = 2 if min(input_shape[:2]) >= 80 else 1
    regularizer = regularizers.L2(l2) if l2 > 0 else None
    inputs, x = normalized_input(input_shape)
    for block, width in enumerate(widths):
        for conv in range(convs_per_block):
            stride = stem_stride if block == conv == 0 else 1
            x = layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False,
                              kernel_regularizer=regularizer)(x)
            x = layers.BatchNormalization(momentum=batch_norm_momentum)(x)
            x = layers.Activation("relu")(x)
        x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    if dropout > 0:
        x = layers.Dropout(dropout)(x)
    x = layers.Dense(dense_units, use_bias=False, kernel_regularizer=regularizer)(x)
    x = layers.BatchNormalization(momentum=batch_norm_momentum)(x)
    x = layers.Activation("relu")(x)
    return keras.Model(inputs, output_heads(x, num_classes, dropout, outputs), name="simple_cnn")
