"""Layers shared by every model: the normalisation that lets a saved model take uint8 faces,
and the output heads.

Only Keras' own layers: a saved model then loads wherever Keras does (MLflow's pyfunc loader,
`mlflow models serve`, another project) without importing affectexp first. What a model
needs besides its weights (its class names, how its faces are cut out) travels in the logged
MLflow model's metadata (inference/model.py).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
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


# The outputs a model can end in (conf/head/): "expression", class probabilities (b, K);
# "affect", valence and arousal (b, 2) in [-1, 1].
HEAD_OUTPUTS = ("expression", "affect")


def output_heads(features, num_classes: int, dropout: float, outputs: Sequence[str]):
    """The model's outputs on its shared `features`, after dropout: one tensor for a single head
    (an expression-only model keeps the single probabilities output that predict.py and serving
    read), a dict {name: tensor} for several (Keras then names each output's loss and metrics).

    "expression" is a softmax over the classes, "affect" valence and arousal through tanh, so that
    predictions stay in AffectNet's [-1, 1]. Both are computed in float32 whatever the dtype
    policy: under mixed precision a float16 softmax and loss lose the small probabilities.
    """
    if dropout > 0:
        features = layers.Dropout(dropout)(features)
    heads = {}
    for name in outputs:  # checked against HEAD_OUTPUTS before training (tasks/train.py check_head)
        if name == "expression":
            heads[name] = layers.Dense(num_classes, activation="softmax", name="expression", dtype="float32")(features)
        elif name == "affect":
            heads[name] = layers.Dense(2, activation="tanh", name="affect", dtype="float32")(features)
        else:
            raise ValueError(f"unknown output {name!r}; choose from {list(HEAD_OUTPUTS)}")
    return heads[outputs[0]] if len(heads) == 1 else heads


def head_outputs(model: keras.Model) -> tuple[str, ...]:
    """The outputs (HEAD_OUTPUTS) a built or loaded model ends in. A model of one output named
    otherwise (a bare Keras model of someone else's, or a Sequential one, which has no output names)
    is taken for class probabilities."""
    names = tuple(getattr(model, "output_names", None) or ())
    if names and set(names) <= set(HEAD_OUTPUTS):
        return tuple(name for name in HEAD_OUTPUTS if name in names)
    if len(names) == 1 or (not names and len(model.outputs) == 1):
        return ("expression",)
    raise ValueError(f"the model's outputs {list(names)} are not {list(HEAD_OUTPUTS)}")


def head_predictions(model: keras.Model, predicted) -> dict[str, np.ndarray]:
    """model.predict's result as {output: float32 array}: (n, K) probabilities for "expression",
    (n, 2) valence and arousal for "affect"."""
    if not isinstance(predicted, dict):
        predicted = {head_outputs(model)[0]: predicted}
    return {name: np.asarray(value, dtype=np.float32) for name, value in predicted.items()}
