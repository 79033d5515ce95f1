"""MobileNetV3 (keras.applications) as a face classifier: small and fast on CPUs and phones."""

from __future__ import annotations

from collections.abc import Sequence

import keras

from affectexp.models.applications import build_application_model

_VARIANTS = {"small": keras.applications.MobileNetV3Small, "large": keras.applications.MobileNetV3Large}


def build_mobilenet_v3(
    input_shape: tuple[int, int, int],
    num_classes: int,
    outputs: Sequence[str],
    variant: str = "small",
    alpha: float = 1.0,
    minimalistic: bool = False,
    weights: str | None = None,
    dropout: float = 0.2,
    l2: float = 1e-5,
    batch_norm_momentum: float = 0.9,
) -> keras.Model:
    """MobileNetV3 `variant` ("small" | "large") with width multiplier `alpha`.

    minimalistic: no squeeze-excite, hard-swish or 5x5 convolutions (faster on some hardware).
    batch_norm_momentum: 0.9 instead of keras.applications' 0.999, whose moving statistics
        lag far behind the weights on small data sets (validation then reads chance).
    Faces must be at least 32x32 (keras.applications' limit). Returns a model mapping
    (batch, H, W, C) uint8-valued faces to (batch, num_classes) probabilities.
    """
    if variant not in _VARIANTS:
        raise ValueError(f"model.variant: unknown MobileNetV3 variant {variant!r}; choose from {list(_VARIANTS)}")
    # include_preprocessing=False: normalisation is the project's, inside the model.
    return build_application_model(_VARIANTS[variant], "mobilenet_v3", input_shape, num_classes, outputs, weights=weights,
                                   dropout=dropout, l2=l2, batch_norm_momentum=batch_norm_momentum, alpha=alpha,
                                   minimalistic=minimalistic, include_preprocessing=False)
