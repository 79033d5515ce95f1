"""Augmentation presets, written in albumentations' own serialised form in conf/augmentation/."""

from __future__ import annotations

import threading
import warnings
from typing import Any

import affectexp  # noqa: F401  (sets NO_ALBUMENTATIONS_UPDATE before albumentations loads)
import albumentations as A
import numpy as np

from affectexp.errors import ConfigError


def build_transform(serialized: dict[str, Any] | None) -> A.Compose | None:
    """albumentations' serialised dict ({"__class_fullname__": "Compose", ...}) -> a Compose.

    None (augmentation=none) -> None. check_transform validates the dict first.
    """
    if not serialized:
        return None
    return A.from_dict({"transform": serialized})


def check_transform(serialized: dict[str, Any] | None) -> None:
    """ConfigError for an unknown transform, a bad value, or an argument albumentations would
    ignore with only a warning (1.x names such as max_holes in 2.x).

    Call it once, at start: recording warnings changes process-wide state, which the reader
    threads that build their own transforms must not race with.
    """
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            build_transform(serialized)
        except KeyError as error:
            raise ConfigError(f"augmentation.transform: albumentations has no transform {error}") from None
        except ValueError as error:
            raise ConfigError(f"augmentation.transform: {' '.join(str(error).splitlines()[:3])}") from None
    ignored = [str(w.message) for w in caught if "are not valid for transform" in str(w.message)]
    if ignored:
        raise ConfigError(f"augmentation.transform: {'; '.join(ignored)} (albumentations 2.x names are needed)")


class FaceAugmenter:
    """Applies a transform to a batch of faces, reproducibly and safely from several threads.

    Each thread builds its own Compose (albumentations transforms hold random state), and
    each batch reseeds it from (seed, epoch, batch), so the augmentations depend on the batch
    and not on which thread happened to run it.
    """

    def __init__(self, serialized: dict[str, Any], seed: int):
        self.serialized = serialized
        self.seed = seed
        self._local = threading.local()
        check_transform(serialized)  # fail at construction, not in a reader thread

    def _transform(self) -> A.Compose:
        if not hasattr(self._local, "transform"):
            self._local.transform = build_transform(self.serialized)
        return self._local.transform

    def __call__(self, faces: np.ndarray, epoch: int, batch: int) -> np.ndarray:
        """(n, H, W, C) uint8 -> augmented (n, H, W, C) uint8."""
        transform = self._transform()
        transform.set_random_seed(int(np.random.SeedSequence([self.seed, epoch, batch]).generate_state(1)[0]))
        out = np.empty_like(faces)
        for i, face in enumerate(faces):
            out[i] = transform(image=face)["image"].reshape(face.shape)
        return out


def augmented_variants(augmenter: FaceAugmenter, faces: np.ndarray, variants: int) -> np.ndarray:
    """(n, H, W, C) uint8 faces -> (n, variants, H, W, C) uint8, `variants` augmentations of each,
    as training would draw them (the augmentations of epochs 0 .. variants-1)."""
    return np.stack([augmenter(faces, epoch, 0) for epoch in range(variants)], axis=1)
