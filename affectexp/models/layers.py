"""Layers shared by every model: the normalisation that lets a saved model take uint8 faces,
and the classifier head.

Only Keras' own layers: a saved model then loads wherever Keras does (MLflow's pyfunc loader,
`mlflow models serve`, another project) without importing affectexp first. What a model
needs besides its weights (its class names, how its faces are cut out) travels in the logged
MLflow model's metadata (inference/model.py).
"""

from __future__ import annotations

import keras
from keras import layers


# Added to the variance: a flat face (std 0) standardises to zeros instead of dividing by zero.
STD_EPSILON = 1e-6


def normalized_input(input_shape: tuple[int, int, int]) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """The model input (faces as stored: 0..255 values) and its standardised float version.

    Standardised per image, (x - mean) / std over its pixels and channels: removes most of the
    brightness and contrast differences between faces (skin tone, exposure, lighting) at no
    parameter cost (a layer normalisation over every axis but the batch, without scale or offset).
    """
    inputs = keras.Input(shape=tuple(input_shape), name="faces")
    scaled = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    standardized = layers.LayerNormalization(axis=[1, 2, 3], center=False, scale=False, epsilon=STD_EPSILON,
                                             name="standardize")(scaled)
    return inputs, standardized


def classifier_head(features, num_classes: int, dropout: float) -> keras.KerasTensor:
    """Softmax over the classes, after dropout.

    The softmax is computed in float32 whatever the dtype policy: under mixed precision a
    float16 softmax and loss lose the small probabilities.
    """
    if dropout > 0:
        features = layers.Dropout(dropout)(features)
    return layers.Dense(num_classes, activation="softmax", name="expression", dtype="float32")(features)
