"""EfficientNet (keras.applications) as a face classifier."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from affectexp.models.applications import build_application_model

_VARIANTS = {f"b{i}": getattr(keras.applications, f"EfficientNetB{i}") for i in range(8)}


def build_efficientnet(
    input_shape: tuple[int, int, int],
    num_classes: int,
    outputs: Sequence[str],
    variant: str = "b0",
    weights: str | None = None,
    dropout: float = 0.2,
    l2: float = 1e-5,
    batch_norm_momentum: float = 0.9,
) -> keras.Model:
    """EfficientNet-`variant` ("b0" ... "b7": width, depth and resolution scaled together).

    Its stem divides by 255 again after the project's per-image standardisation; the batch
    norm right after the first convolution undoes any such constant scale.
    Faces must be at least 32x32. Returns a model mapping (batch, H, W, C) uint8-valued faces
    to (batch, num_classes) probabilities.
    """
    if variant not in _VARIANTS:
        raise ValueError(f"model.variant: unknown EfficientNet variant {variant!r}; choose from {list(_VARIANTS)}")
    return build_application_model(_VARIANTS[variant], "efficientnet", input_shape, num_classes, outputs, weights=weights,
                                   dropout=dropout, l2=l2, batch_norm_momentum=batch_norm_momentum)
