"""Layers shared by every model: the normalisation that lets a saved model take uint8 faces."""

from __future__ import annotations

import keras
from keras import layers, ops


@keras.saving.register_keras_serializable(package="affectexp")
class PerImageStandardization(layers.Layer):
    """(x - mean) / std over each image's pixels and channels.

    Removes most of the brightness and contrast differences between faces (skin tone,
    exposure, lighting) at no parameter cost.
    """

    def __init__(self, epsilon: float = 1e-3, **kwargs):
        super().__init__(**kwargs)
        self.epsilon = epsilon

    def call(self, inputs):
        axes = tuple(range(1, len(inputs.shape)))
        mean = ops.mean(inputs, axis=axes, keepdims=True)
        std = ops.std(inputs, axis=axes, keepdims=True)
        return (inputs - mean) / ops.maximum(std, self.epsilon)

    def get_config(self) -> dict:
        return {**super().get_config(), "epsilon": self.epsilon}


def normalized_input(input_shape: tuple[int, int, int]) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The model input (faces as stored: 0..255 values) and its standardised float version."""
    inputs = keras.Input(shape=tuple(input_shape), name="faces")
    scaled = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    return inputs, PerImageStandardization(name="standardize")(scaled)


def classifier_head(features, num_classes: int, dropout: float) -> keras.KerasTensor:
    """Softmax over the classes, after dropout."""
    if dropout > 0:
        features = layers.Dropout(dropout)(features)
    return layers.Dense(num_classes, activation="softmax", name="expression")(features)
