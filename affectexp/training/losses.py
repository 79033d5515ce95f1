"""The training loss: cross-entropy on integer labels, with optional label smoothing."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="affectexp")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of integer labels (b,) against probabilities (b, k), the targets smoothed
    to 1 - s + s/k for the true class and s/k for the others.

    Keras' SparseCategoricalCrossentropy has no label smoothing, and one-hot labels would
    change the input pipeline and the class weighting; this keeps the labels as stored.
    """

    def __init__(self, num_classes: int, label_smoothing: float = 0.0, name: str = "smoothed_sparse_crossentropy",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = num_classes
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
        targets = ops.one_hot(labels, self.num_classes, dtype=y_pred.dtype)
        return keras.losses.categorical_crossentropy(targets, y_pred, label_smoothing=self.label_smoothing)

    def get_config(self) -> dict:
        return {**super().get_config(), "num_classes": self.num_classes, "label_smoothing": self.label_smoothing}


def classification_loss(num_classes: int, label_smoothing: float) -> keras.losses.Loss | str:
    """Keras' own sparse cross-entropy, or the smoothed one when label_smoothing > 0."""
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"trainer.label_smoothing: {label_smoothing} is not in [0, 1)")
    if label_smoothing == 0:
        return "sparse_categorical_crossentropy"
    return SmoothedSparseCrossentropy(num_classes, label_smoothing)
