"""Backbones from keras.applications as face classifiers (used by mobilenet_v3.py, efficientnet.py).

keras.applications builds ImageNet networks: RGB input, their own preprocessing, batch-norm
momentum 0.99-0.999, no weight decay. Here they get the project's normalisation (uint8 faces
in, per-image standardisation), grayscale handled, momentum and L2 from config, and the
project's classifier head.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import keras
from keras import layers, regularizers

from affectexp.models.layers import normalized_input, output_heads

# Layers whose `kernel` gets the L2 penalty (depthwise kernels are left unpenalised, as in
# the MobileNet and EfficientNet papers).
_PENALISED = (layers.Conv2D, layers.Dense)


def backbone_input(standardized, weights: str | None) -> keras.KerasTensor:
    """(batch, H, W, C) standardised faces -> what the backbone's stem takes.

    Pretrained weights expect three channels, so grey faces are repeated into three; a
    backbone trained from scratch takes the faces' own channels (a third of the stem's cost
    for grey faces).
    """
    if weights is not None and standardized.shape[-1] == 1:
        return layers.Concatenate(name="gray_to_rgb")([standardized] * 3)
    return standardized


def tune_backbone(backbone: keras.Model, l2: float, batch_norm_momentum: float) -> None:
    """Set L2 on every conv/dense kernel and the momentum of every batch norm, in place.

    keras.applications takes neither as an argument. The regulariser is set on the layer (so
    it is saved in the model's config) and on its variable (what Keras reads for the loss).
    """
    regularizer = regularizers.L2(l2) if l2 > 0 else None
    for layer in backbone.layers:
        if isinstance(layer, _PENALISED):
            layer.kernel_regularizer = regularizer
            layer.kernel.regularizer = regularizer
        elif isinstance(layer, layers.BatchNormalization):
            layer.momentum = batch_norm_momentum


def build_application_model(
    backbone_fn: Callable[..., keras.Model],
    name: str,
    input_shape: tuple[int, int, int],
    num_classes: int,
    outputs: Sequence[str],
    *,
    weights: str | None,
    dropout: float,
    l2: float,
    batch_norm_momentum: float,
    **backbone_kwargs,
) -> keras.Model:
    """A keras.applications backbone (`include_top=False`, global average pooling) with the
    project's input normalisation and classifier head.

    Args:
        backbone_fn: e.g. keras.applications.MobileNetV3Small.
        weights: None (random initialisation) or a local weights file of the backbone without
            its top (keras.applications' "imagenet" downloads them).
        backbone_kwargs: passed to backbone_fn (alpha, minimalistic, ...).
    Returns:
        A model mapping (batch, H, W, C) uint8-valued faces to (batch, num_classes).
    """
    inputs, standardized = normalized_input(input_shape)
    stem = backbone_input(standardized, weights)
    backbone = backbone_fn(input_shape=tuple(stem.shape[1:]), include_top=False, weights=weights,
                           pooling="avg", **backbone_kwargs)
    tune_backbone(backbone, l2, batch_norm_momentum)
    return keras.Model(inputs, output_heads(backbone(stem), num_classes, dropout, outputs), name=name)
