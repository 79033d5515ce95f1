"""The training losses: cross-entropy on integer labels, with optional label smoothing; mean
squared error of valence and arousal, masked where AffectNet left them unannotated."""

from __future__ import annotations

import keras
from keras import ops

from affectexp.data.affectnet_layout import NOT_ANNOTATED


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
    if label_smoothing == 0:
        return "sparse_categorical_crossentropy"
    return SmoothedSparseCrossentropy(num_classes, label_smoothing)


@keras.saving.register_keras_serializable(package="affectexp")
class MaskedAffectError(keras.losses.Loss):
    """Mean squared error of (valence, arousal) targets (b, 2) against predictions (b, 2) over
    the annotated values only: a target of NOT_ANNOTATED (-2) contributes neither to the loss
    nor to its gradient, and a batch without any annotated value gives 0.

    Each row's loss is scaled so that Keras' mean over the batch is the mean over the annotated
    values (not diluted by the masked ones).
    """

    def __init__(self, name: str = "masked_affect_error", **kwargs):
        super().__init__(name=name, **kwargs)

    def call(self, y_true, y_pred):
        y_true = ops.cast(y_true, y_pred.dtype)
        annotated = ops.not_equal(y_true, NOT_ANNOTATED)
        # where(), not a product with the mask: the masked targets never enter the arithmetic.
        error = ops.where(annotated, ops.square(y_pred - ops.where(annotated, y_true, y_pred)), 0.0)
        count = ops.sum(ops.cast(annotated, y_pred.dtype))
        rows = ops.cast(ops.shape(y_true)[0], y_pred.dtype)
        return ops.sum(error, axis=-1) * rows / ops.maximum(count, 1.0)


def affect_loss() -> keras.losses.Loss:
    """The loss of the "affect" output."""
    return MaskedAffectError()
