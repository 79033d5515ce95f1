"""The training input: balancing by class at training time, chunk-order streaming, augmentation."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from conftest import compose_config, wait_until_ended, worker_pids

# An imbalanced split: 50 / 12 / 5 faces.
LABELS = np.repeat([0, 1, 2], [50, 12, 5])


def class_counts(labels: np.ndarray) -> list[int]:
    return np.bincount(labels, minlength=3).tolist()


@pytest.mark.parametrize("balance", ["none", "class_weight"])
def test_without_resampling_every_face_is_used_once(balance):
    from affectexp.training.inputs import balanced_positions

    positions = balanced_positions(LABELS, balance, np.random.default_rng(0))
    np.testing.assert_array_equal(positions, np.arange(len(LABELS)))


def test_oversampling_repeats_the_small_classes_up_to_the_largest():
    from affectexp.training.inputs import balanced_positions

    positions = balanced_positions(LABELS, "oversample", np.random.default_rng(0))
    assert class_counts(LABELS[positions]) == [50, 50, 50]
    assert set(positions.tolist()) == set(range(len(LABELS)))  # every face still seen each epoch


def test_truncation_draws_a_fresh_subset_each_epoch():
    from affectexp.training.inputs import balanced_positions

    epochs = [balanced_positions(LABELS, "truncate", np.random.default_rng([0, epoch])) for epoch in range(10)]
    for positions in epochs:
        assert class_counts(LABELS[positions]) == [5, 5, 5] and len(set(positions.tolist())) == 15
    assert len(set(np.concatenate(epochs).tolist())) > 40  # over the epochs most faces are used


def test_streaming_order_keeps_few_chunks_open():
    """Reading rows in this order, at most `window` chunks are started and not yet finished."""
    from affectexp.training.inputs import chunk_window_order

    chunk_rows, window = 10, 3
    positions = np.sort(np.random.default_rng(1).choice(400, 300, replace=True))  # oversampled, with repeats
    order = chunk_window_order(positions, chunk_rows, window, np.random.default_rng(2))
    np.testing.assert_array_equal(np.sort(order), positions)
    remaining = np.bincount(positions // chunk_rows).tolist()
    open_chunks, most_open = set(), 0
    for chunk in order // chunk_rows:
        open_chunks.add(chunk)
        remaining[chunk] -= 1
        most_open = max(most_open, len(open_chunks))
        if remaining[chunk] == 0:
            open_chunks.discard(chunk)
    assert most_open <= window
    assert not np.array_equal(order, positions)  # and it is shuffled


def epoch_labels_and_faces(batches) -> tuple[np.ndarray, np.ndarray]:
    pairs = [batches[i] for i in range(len(batches))]
    return np.concatenate([p[1] for p in pairs]), np.concatenate([p[0] for p in pairs])


def test_streaming_yields_the_same_faces_as_memory_with_bounded_memory(built_cache):
    from affectexp.training.inputs import SHUFFLE_WINDOW_CHUNKS, CacheBatches

    path = built_cache[1].cache.path
    in_memory = CacheBatches(path, "train", 32, shuffle=True, seed=0)
    streamed = CacheBatches(path, "train", 32, shuffle=True, seed=0, ram_budget_bytes=0)
    try:
        assert in_memory.in_memory and not streamed.in_memory and streamed.faces is None
        memory_labels, memory_faces = epoch_labels_and_faces(in_memory)
        stream_labels, stream_faces = epoch_labels_and_faces(streamed)
        assert len(streamed._chunks) <= 2 * SHUFFLE_WINDOW_CHUNKS + 2
        np.testing.assert_array_equal(np.sort(stream_labels), np.sort(memory_labels))
        # The same faces, in another order: compare them sorted by their bytes.
        key = lambda faces: sorted(face.tobytes() for face in faces)  # noqa: E731
        assert key(stream_faces) == key(memory_faces)
    finally:
        in_memory.close()
        streamed.close()


def test_balanced_batches_have_balanced_epochs(built_cache):
    from affectexp.training.inputs import CacheBatches

    path = built_cache[1].cache.path
    batches = CacheBatches(path, "train", 32, shuffle=True, seed=0, balance="truncate", ram_budget_bytes=0)
    try:
        smallest = np.bincount(batches.labels).min()
        classes = len(np.unique(batches.labels))
        assert len(batches) == math.ceil(classes * smallest / 32)
        labels, _ = epoch_labels_and_faces(batches)
        assert set(np.bincount(labels).tolist()) == {smallest}
    finally:
        batches.close()


def strong_augmentation_and_faces(cfg, count: int):
    """(augmentation=strong in albumentations' serialised form, the first `count` training faces)."""
    from affectexp.data.cache import FaceCache
    from affectexp.training.run import augmentation_dict

    serialized = augmentation_dict(compose_config("train", cfg.paths.root, ["augmentation=strong", "cache.size=48"]))
    with FaceCache(cfg.cache.path) as cache:
        return serialized, cache.read_faces("train", 0, count)


def test_augmentation_depends_on_epoch_and_batch_only(built_cache):
    from affectexp.training.augment import FaceAugmenter, augmented_variants

    serialized, faces = strong_augmentation_and_faces(built_cache[1], 4)
    first, again = FaceAugmenter(serialized, seed=3), FaceAugmenter(serialized, seed=3)
    np.testing.assert_array_equal(first(faces, 1, 2), again(faces, 1, 2))
    assert not np.array_equal(first(faces, 1, 2), first(faces, 2, 2))
    variants = augmented_variants(first, faces, 5)
    assert variants.shape == (4, 5, *faces.shape[1:]) and variants.dtype == np.uint8


def test_augmenting_processes_give_the_same_batches_and_end_on_close(built_cache):
    from affectexp.training.augment import FaceAugmenter, ProcessAugmenter

    serialized, faces = strong_augmentation_and_faces(built_cache[1], 6)
    before = worker_pids()
    augmenter = ProcessAugmenter(serialized, seed=3, processes=2, patience=120)
    try:
        in_workers = [augmenter(faces, epoch, batch) for epoch in range(2) for batch in range(3)]
        workers = worker_pids() - before
        assert 1 <= len(workers) <= 2  # started as batches came; one at a time needs one
    finally:
        augmenter.close()
    here = FaceAugmenter(serialized, seed=3)
    for (epoch, batch), result in zip([(e, b) for e in range(2) for b in range(3)], in_workers):
        np.testing.assert_array_equal(result, here(faces, epoch, batch))
    assert not wait_until_ended(workers), "augmenting processes outlived close()"


def test_batches_the_workers_have_not_finished_in_time_are_augmented_by_the_caller(built_cache):
    """Idle-priority workers get no CPU while other programs keep every core busy: the
    training must go on without them, with the same augmentations."""
    from affectexp.training.augment import FaceAugmenter, ProcessAugmenter

    serialized, faces = strong_augmentation_and_faces(built_cache[1], 6)
    augmenter = ProcessAugmenter(serialized, seed=3, processes=1, patience=0.0)
    try:
        started = time.monotonic()
        results = [augmenter(faces, 0, batch) for batch in range(8)]
        assert time.monotonic() - started < 5  # never waited for the workers to start
        assert augmenter.waiting <= 2  # batches handed to the workers stay bounded
    finally:
        augmenter.close()
    here = FaceAugmenter(serialized, seed=3)
    for batch, result in enumerate(results):
        np.testing.assert_array_equal(result, here(faces, 0, batch))


@pytest.mark.parametrize(("transform", "message"), [
    ({"__class_fullname__": "CoarseDropout", "max_holes": 3, "p": 1.0}, "'max_holes' are not valid"),
    ({"__class_fullname__": "NoSuchTransform", "p": 1.0}, "no transform 'NoSuchTransform'"),
    ({"__class_fullname__": "Affine", "scale": "big", "p": 1.0}, "scale"),
])
def test_a_bad_augmentation_stops_at_start(transform, message):
    from affectexp.errors import ConfigError
    from affectexp.training.augment import check_transform

    with pytest.raises(ConfigError, match=message):
        check_transform({"__class_fullname__": "Compose", "transforms": [transform]})
