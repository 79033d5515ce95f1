"""Augmentation presets, written in albumentations' own serialised form in conf/augmentation/."""

from __future__ import annotations

import threading
from typing import Any

import affectexp  # noqa: F401  (sets NO_ALBUMENTATIONS_UPDATE before albumentations loads)
import albumentations as A
import numpy as np


def build_transform(serialized: dict[str, Any] | None) -> A.Compose | None:
    """albumentations' serialised dict ({"__class_fullname__": "Compose", ...}) -> a Compose.

    None (augmentation=none) -> None. Unknown transforms or arguments stop here, at start.
    """
    if not serialized:
        return None
    return A.from_dict({"transform": serialized})


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
        build_transform(serialized)  # fail at construction, not in a worker thread

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
