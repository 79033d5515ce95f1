"""Batches of faces streamed from the HDF5 cache into Keras, augmented on the fly."""

from __future__ import annotations

import logging
import math
import threading
from collections import OrderedDict

import keras
import numpy as np

from affectexp.data.cache import FaceCache
from affectexp.training.augment import FaceAugmenter, ProcessAugmenter

log = logging.getLogger(__name__)

# Consecutive cache chunks whose rows are shuffled together when streaming.
SHUFFLE_WINDOW_CHUNKS = 4


class CacheBatches(keras.utils.PyDataset):
    """(faces uint8 (b, H, W, C), targets) batches of one split of a cache.

    The targets are those of the model's `outputs` (conf/head/): labels int64 (b,) for
    "expression", (valence, arousal) float32 (b, 2) for "affect" (-2 where not annotated:
    the loss masks them), a dict {output: targets} for several. `sample_weights` (per class,
    trainer.balance=class_weight) weights the expression loss, and only it, through per-row
    weights, which Keras, unlike class_weight, takes for models of several outputs too.

    When the split fits in `ram_budget_bytes` it is read once into memory and shuffled row
    by row. Otherwise it is streamed: random row reads from HDF5 are ~100x slower than
    sequential ones, so each epoch visits the chunks in a shuffled order and shuffles rows
    within windows of SHUFFLE_WINDOW_CHUNKS chunks; memory stays a few chunks whatever the
    size of the cache. `balance` ("oversample" | "truncate") draws each epoch's rows so that
    every class is equally frequent (balanced_positions); the cache keeps every face.
    `augmentation` (albumentations' serialised form) runs in `augment_workers` processes
    (ProcessAugmenter), or in the `workers` reader threads when that is 0.

    `cache` stays its opener's: the batches read it (h5py serialises the reader threads' calls on
    one file as on several) and never close it.
    """

    def __init__(self, cache: FaceCache, split: str, batch_size: int, *, shuffle: bool, seed: int,
                 augmentation: dict | None = None, ram_budget_bytes: int = 2 << 30,
                 steps: int | None = None, workers: int = 1, balance: str = "none", augment_workers: int = 0,
                 outputs: tuple[str, ...] = ("expression",), sample_weights: dict[int, float] | None = None):
        # A reader thread per augmenting process, each waiting on its batch (measured: more
        # threads than processes only added contention in the training process).
        super().__init__(workers=max(workers, augment_workers), use_multiprocessing=False, max_queue_size=8)
        self.cache = cache
        self.split = split
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.steps = steps
        self.balance = balance
        self.size = self.cache.split_size(split)
        self.labels = self.cache.labels(split)
        self.outputs = tuple(outputs)
        self.affect = self.cache.affect(split) if "affect" in self.outputs else None
        # The weights are the expression classes': a model without that output (head=affect)
        # trains its regression on every row alike.
        self.row_weights = None if sample_weights is None or "expression" not in outputs else \
            np.array([sample_weights[c] for c in range(len(sample_weights))], np.float32)[self.labels]
        self.chunk_rows = self.cache.chunk_rows
        self.augment = make_augmenter(augmentation, seed, augment_workers)
        split_bytes = self.size * int(np.prod(self.cache.face_shape))
        self.in_memory = split_bytes <= ram_budget_bytes
        self.faces = self.cache.read_faces(split, 0, self.size) if self.in_memory else None
        if not self.in_memory:
            log.info("%s split: %d faces (%.0f MB) over the RAM budget (%.0f MB): streamed %d chunks at a time",
                     split, self.size, split_bytes / 2**20, ram_budget_bytes / 2**20, SHUFFLE_WINDOW_CHUNKS)
        self._chunks: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self.set_epoch(0)

    def __len__(self) -> int:
        full = math.ceil(len(self.order) / self.batch_size)
        return min(full, self.steps) if self.steps else full

    def set_epoch(self, epoch: int) -> None:
        """Read epoch `epoch` (0-based) next: its order, balancing and augmentation are seeded by
        the epoch's number, so a resumed run reads what the uninterrupted one would have.
        During fit, FollowEpochs calls it at the start of every epoch."""
        self.epoch = epoch
        self.order = self._epoch_order()

    def _epoch_order(self) -> np.ndarray:
        """The positions (within the split) in the order this epoch reads them."""
        if not self.shuffle:
            return np.arange(self.size)
        rng = np.random.default_rng([self.seed, self.epoch])
        positions = balanced_positions(self.labels, self.balance, rng)
        if self.in_memory:
            return rng.permutation(positions)
        return chunk_window_order(positions, self.chunk_rows, SHUFFLE_WINDOW_CHUNKS, rng)

    def _read_chunk(self, chunk: int) -> np.ndarray:
        with self._lock:
            if chunk in self._chunks:
                self._chunks.move_to_end(chunk)
                return self._chunks[chunk]
            faces = self.cache.read_faces(self.split, chunk * self.chunk_rows,
                                          min((chunk + 1) * self.chunk_rows, self.size))
            self._chunks[chunk] = faces
            # Two windows: a batch that straddles windows, plus reader threads running ahead.
            while len(self._chunks) > 2 * SHUFFLE_WINDOW_CHUNKS + 2:
                self._chunks.popitem(last=False)
            return faces

    def gather(self, positions: np.ndarray) -> np.ndarray:
        """Faces at the given positions of the split, (n, H, W, C) uint8."""
        if self.in_memory:
            return self.faces[positions]
        out = np.empty((len(positions), *self.cache.face_shape), dtype=np.uint8)
        chunk_of = positions // self.chunk_rows
        for chunk in np.unique(chunk_of):
            mask = chunk_of == chunk
            out[mask] = self._read_chunk(int(chunk))[positions[mask] - chunk * self.chunk_rows]
        return out

    def __getitem__(self, index: int):
        positions = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        faces = self.gather(positions)
        if self.augment is not None:
            faces = self.augment(faces, self.epoch, index)
        targets = {"expression": self.labels[positions]}
        if self.affect is not None:
            targets["affect"] = self.affect[positions]
        targets = targets[self.outputs[0]] if len(self.outputs) == 1 else {k: targets[k] for k in self.outputs}
        if self.row_weights is None:
            return faces, targets
        weights = self.row_weights[positions]
        if len(self.outputs) == 1:
            return faces, targets, weights
        return faces, targets, {k: weights if k == "expression" else np.ones_like(weights) for k in self.outputs}

    def close(self) -> None:
        """End the augmenting processes (the cache is left open: see the class)."""
        if isinstance(self.augment, ProcessAugmenter):
            self.augment.close()


class FollowEpochs(keras.callbacks.Callback):
    """Give the training batches fit's epoch number at the start of each epoch.

    Counting PyDataset.on_epoch_end calls instead would be wrong: Keras also calls it once
    when each fit starts, so a resumed fit would read other epochs' data. Callbacks' epoch
    begin runs before Keras starts the reader threads of the epoch.
    """

    def __init__(self, batches: CacheBatches):
        super().__init__()
        self.batches = batches

    def on_epoch_begin(self, epoch, logs=None):
        self.batches.set_epoch(epoch)


def make_augmenter(augmentation: dict | None, seed: int, processes: int) -> FaceAugmenter | ProcessAugmenter | None:
    """None without augmentation; else augmenting in `processes` worker processes, or in the
    calling (reader) threads when processes is 0."""
    if not augmentation:
        return None
    return ProcessAugmenter(augmentation, seed, processes) if processes > 0 else FaceAugmenter(augmentation, seed)


def balanced_positions(labels: np.ndarray, balance: str, rng: np.random.Generator) -> np.ndarray:
    """One epoch's positions (int64, sorted) into a split with these labels (n,), balanced by class.

    "none" and "class_weight": every position once (class_weight balances the loss instead).
    "oversample": every position once, plus random repeats of the smaller classes' positions
    up to the largest class's count. "truncate": a fresh random subset of each class with the
    smallest class's count each epoch, so over the epochs every face is still seen.
    """
    if balance in ("none", "class_weight"):
        return np.arange(len(labels))
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    counts = [len(members) for members in by_class]
    picked = []
    for members in by_class:
        if balance == "truncate":
            picked.append(rng.choice(members, min(counts), replace=False))
        else:
            picked += [members, rng.choice(members, max(counts) - len(members), replace=True)]
    return np.sort(np.concatenate(picked))


def chunk_window_order(positions: np.ndarray, chunk_rows: int, window_chunks: int,
                       rng: np.random.Generator) -> np.ndarray:
    """`positions` shuffled for streaming: chunks in a random order, rows shuffled only among
    the rows of `window_chunks` consecutive chunks of that order, so reading them touches a
    few chunks at a time (random row reads from HDF5 are ~100x slower than whole chunks)."""
    if len(positions) == 0:
        return positions
    chunk_of = positions // chunk_rows
    rank = np.empty(chunk_of.max() + 1, dtype=np.int64)
    rank[rng.permutation(len(rank))] = np.arange(len(rank))
    window = rank[chunk_of] // window_chunks
    return positions[np.lexsort((rng.random(len(positions)), window))]


def class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """Weights n / (k * count_c), so every class contributes equally to the loss."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    weights = len(labels) / (num_classes * np.maximum(counts, 1))
    return {c: float(w) for c, w in enumerate(weights)}
