"""Layers shared by every model: the normalisation that lets a saved model take uint8 faces,
the classifier head, and the class names a saved model carries."""

from __future__ import annotations

from collections.abc import Sequence

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


@keras.saving.register_keras_serializable(package="affectexp")
class ClassNames(layers.Identity):
    """Passes the probabilities through; records which class each output column is.

    Saved with the model, so evaluation on another cache can match classes by name
    (a model trained on 8 classes evaluated on a 5-class cache).
    """

    def __init__(self, class_names: Sequence[str], **kwargs):
        super().__init__(**kwargs)
        self.class_names = list(class_names)

    def get_config(self) -> dict:
        return {**super().get_config(), "class_names": self.class_names}


def normalized_input(input_shape: tuple[int, int, int]) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The model input (faces as stored: 0..255 values) and its standardised float version."""
    inputs = keras.Input(shape=tuple(input_shape), name="faces")
    scaled = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    return inputs, PerImageStandardization(name="standardize")(scaled)


def classifier_head(features, num_classes: int, dropout: float) -> keras.KerasTensor:
    """Softmax over the classes, after dropout.

    The softmax is computed in float32 whatever the dtype policy: under mixed precision a
    float16 softmax and loss lose the small probabilities.
    """
    if dropout > 0:
        features = layers.Dropout(dropout)(features)
    return layers.Dense(num_classes, activation="softmax", name="expression", dtype="float32")(features)


def with_class_names(model: keras.Model, class_names: Sequence[str]) -> keras.Model:
    """`model` with a ClassNames layer on its (batch, k) output; k must equal len(class_names)."""
    if model.output.shape[-1] != len(class_names):
        raise ValueError(f"model {model.name!r} outputs {model.output.shape[-1]} classes, "
                         f"but {len(class_names)} class names were given: {list(class_names)}")
    outputs = ClassNames(class_names, name="class_names", dtype="float32")(model.output)
    return keras.Model(model.input, outputs, name=model.name)


def class_names_of(model: keras.Model) -> list[str] | None:
    """The class names a model was saved with (its ClassNames layer), or None for a model without."""
    for layer in model.layers:
        if isinstance(layer, ClassNames):
            return list(layer.class_names)
    return None
