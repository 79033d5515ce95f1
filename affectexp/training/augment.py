"""Augmentation presets, written in albumentations' own serialised form in conf/augmentation/."""

from __future__ import annotations

import multiprocessing
import os
import threading
import warnings
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import affectexp  # noqa: F401  (sets NO_ALBUMENTATIONS_UPDATE before albumentations loads)
import albumentations as A
import cv2
import numpy as np

from affectexp.errors import ConfigError
from affectexp.processes import exit_with_parent, run_when_idle


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
        # Faces are too small for OpenCV's thread pool to pay off: with it, augmenting burnt
        # twice the CPU time for the same wall time (measured at 48 and 96 px). Process-wide.
        cv2.setNumThreads(1)

    def _transform(self) -> A.Compose:
        if not hasattr(self._local, "transform"):
            self._local.transform = build_transform(self.serialized)
        return self._local.transform

    def __call__(self, faces: np.ndarray, epoch: int, batch: int) -> np.ndarray:
        """(n, H, W, C) uint8 -> augmented (n, H, W, C) uint8."""
        transform = self._transform()
        seed_each_transform(transform, int(np.random.SeedSequence([self.seed, epoch, batch]).generate_state(1)[0]))
        out = np.empty_like(faces)
        for i, face in enumerate(faces):
            out[i] = transform(image=face)["image"].reshape(face.shape)
        return out


def seed_each_transform(transform: A.BasicTransform | A.BaseCompose, seed: int) -> None:
    """Seed `transform` and, each with a seed of its own drawn from `seed`, every transform in it.

    albumentations' own set_random_seed hands a Compose's seed to each of its transforms, so that
    transforms drawing as many numbers per face draw the same ones: in the strong preset the
    OneOf of blur and noise (p=0.4) applied to a face almost exactly when the flip (p=0.5) did
    (correlation 0.84 over 4,000 faces, albumentations 2.0.8).
    """
    transform.set_random_seed(seed)
    inner = getattr(transform, "transforms", [])
    for child, child_seed in zip(inner, np.random.SeedSequence(seed).generate_state(len(inner))):
        seed_each_transform(child, int(child_seed))


def default_augment_workers() -> int:
    """Augmenting processes when the config leaves it open: one per core, at most 8."""
    return min(os.cpu_count() or 1, 8)


class ProcessAugmenter:
    """FaceAugmenter's augmentations, computed in `processes` worker processes at idle priority.

    albumentations spends most of a face's time in Python. Run in the training process, that
    time holds the GIL that Keras' loop needs at every step, and on a CPU the training step
    already keeps the cores busy: augmenting there slowed training by more than its own CPU
    time. The workers have interpreters of their own and run only when a core would otherwise
    idle (run_when_idle), so augmentation fills the gaps of the training step instead of
    preempting it. The results are FaceAugmenter's, since every batch is reseeded from
    (seed, epoch, batch) wherever it runs.

    Idle-priority workers get no CPU while other programs keep every core busy. So a batch
    the workers have not finished within `patience` seconds, and every batch while 2 x
    `processes` are waiting, is augmented by the calling thread itself: training slows down
    but never stalls. (Idle workers of a busy training step can take a second for a batch:
    with a patience of 1 s, fallbacks cost what the processes gain.)

    The workers start on the first batch with spawn (the training process runs TensorFlow's
    threads, which must not be forked): they import NumPy, OpenCV, albumentations and, as
    spawn does, the main script's top-level imports (train.py's: Hydra only).
    """

    def __init__(self, serialized: dict[str, Any], seed: int, processes: int, patience: float = 10.0):
        self.local = FaceAugmenter(serialized, seed)  # also checks the transform, here and not in a worker
        self.processes = processes
        self.patience = patience
        self._pool: ProcessPoolExecutor | None = None
        self._waiting = 0  # batches handed to the workers and not finished yet
        self._lock = threading.Lock()

    def __call__(self, faces: np.ndarray, epoch: int, batch: int) -> np.ndarray:
        """(n, H, W, C) uint8 -> augmented (n, H, W, C) uint8, the same as FaceAugmenter's."""
        future = self._submit(faces, epoch, batch)
        if future is not None:
            try:
                return future.result(timeout=self.patience)
            except FutureTimeout:
                pass  # left to finish on its own; the result is computed here in the meantime
        return self.local(faces, epoch, batch)

    def _submit(self, faces: np.ndarray, epoch: int, batch: int):
        """The workers' future for this batch, or None while too many batches are waiting."""
        with self._lock:
            if self._waiting >= 2 * self.processes:
                return None
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    self.processes, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_augment_worker, initargs=(self.local.serialized, self.local.seed))
            future = self._pool.submit(_augment_in_worker, faces, epoch, batch)
            self._waiting += 1
        future.add_done_callback(self._finished)
        return future

    def _finished(self, _future) -> None:
        with self._lock:
            self._waiting -= 1

    @property
    def waiting(self) -> int:
        """Batches handed to the workers and not finished yet (at most 2 x processes)."""
        return self._waiting

    def close(self) -> None:
        """Let the workers end: batches not started are dropped, and nothing waits for the
        others, which starved workers might finish only much later."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


_worker_augmenter: FaceAugmenter | None = None


def _start_augment_worker(serialized: dict[str, Any], seed: int) -> None:
    global _worker_augmenter
    exit_with_parent()
    run_when_idle()
    _worker_augmenter = FaceAugmenter(serialized, seed)


def _augment_in_worker(faces: np.ndarray, epoch: int, batch: int) -> np.ndarray:
    return _worker_augmenter(faces, epoch, batch)


def augmented_variants(augmenter: FaceAugmenter, faces: np.ndarray, variants: int) -> np.ndarray:
    """(n, H, W, C) uint8 faces -> (n, variants, H, W, C) uint8, `variants` augmentations of each,
    as training would draw them (the augmentations of epochs 0 .. variants-1)."""
    return np.stack([augmenter(faces, epoch, 0) for epoch in range(variants)], axis=1)
