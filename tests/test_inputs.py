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
    from affectexp.data.cache import FaceCache
    from affectexp.training.inputs import SHUFFLE_WINDOW_CHUNKS, CacheBatches

    cache = FaceCache(built_cache[1].cache.path)
    in_memory = CacheBatches(cache, "train", 32, shuffle=True, seed=0)
    streamed = CacheBatches(cache, "train", 32, shuffle=True, seed=0, ram_budget_bytes=0)
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
        cache.close()


# A small imbalanced cache written with the project's own writer: 40 / 10 / 6 training faces
# in a seeded random order, 4 rows a chunk (14 chunks: more than the streaming window and more
# than the chunks CacheBatches keeps), each face carrying its own position in its pixels.
CACHE_COUNTS = [40, 10, 6]
CACHE_CHUNK_ROWS = 4


def position_faces(count: int) -> np.ndarray:
    """(count, 4, 4, 1) uint8 faces whose first two pixels spell their position (low, high byte)."""
    faces = np.zeros((count, 4, 4, 1), np.uint8)
    faces[:, 0, 0, 0] = np.arange(count) % 256
    faces[:, 0, 1, 0] = np.arange(count) // 256
    return faces


def positions_of(faces: np.ndarray) -> np.ndarray:
    return faces[:, 0, 0, 0].astype(np.int64) + 256 * faces[:, 0, 1, 0].astype(np.int64)


@pytest.fixture(scope="module")
def imbalanced_cache(tmp_path_factory) -> tuple[str, np.ndarray]:
    """(path, train labels) of a train-only cache with CACHE_COUNTS faces a class."""
    from affectexp.data.cache import COLUMNS
    from affectexp.data.cache_writer import CacheWriter

    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(3), CACHE_COUNTS))
    path = tmp_path_factory.mktemp("imbalanced") / "imbalanced.h5"
    writer = CacheWriter(path, (4, 4, 1), CACHE_CHUNK_ROWS, fingerprint="imbalanced")
    columns = {name: np.zeros(len(labels), dtype) for name, dtype in COLUMNS.items()}
    columns["labels"] = labels.astype(np.int16)
    writer.append_chunk(position_faces(len(labels)), columns, [f"row:{i}" for i in range(len(labels))],
                        np.zeros(0, np.int64), [], rows_consumed=len(labels))
    writer.finish({"class_names": ["neutral", "happy", "sad"],
                   "split_ranges": {"train": [0, len(labels)], "val": [len(labels)] * 2, "test": [len(labels)] * 2}})
    return str(path), labels


def read_epoch(batches, epoch: int) -> tuple[np.ndarray, np.ndarray]:
    """(positions read, labels given) over one epoch, in reading order."""
    batches.set_epoch(epoch)
    pairs = [batches[i] for i in range(len(batches))]
    return positions_of(np.concatenate([p[0] for p in pairs])), np.concatenate([p[1] for p in pairs])


@pytest.mark.parametrize("streamed", [False, True], ids=["in_memory", "streamed"])
@pytest.mark.parametrize(("balance", "counts"), [
    ("none", CACHE_COUNTS), ("class_weight", CACHE_COUNTS), ("oversample", [40, 40, 40]), ("truncate", [6, 6, 6])])
def test_each_balance_mode_gives_its_class_counts_every_epoch(imbalanced_cache, balance, counts, streamed):
    from affectexp.data.cache import FaceCache
    from affectexp.training.inputs import CacheBatches

    path, labels = imbalanced_cache
    with FaceCache(path) as cache:
        batches = CacheBatches(cache, "train", 5, shuffle=True, seed=0, balance=balance,
                               ram_budget_bytes=0 if streamed else 2 << 30)
        assert batches.in_memory is not streamed
        epochs = [read_epoch(batches, epoch) for epoch in range(3)]
        assert len(batches) == math.ceil(sum(counts) / 5)
    for positions, given in epochs:
        np.testing.assert_array_equal(given, labels[positions])  # each face comes with its own label
        assert np.bincount(given, minlength=3).tolist() == counts
        if balance == "truncate":
            assert len(set(positions.tolist())) == sum(counts)  # a subset, no face twice
        else:
            assert set(positions.tolist()) == set(range(len(labels)))  # every face, every epoch
    if balance == "truncate":  # a fresh subset each epoch
        assert len({tuple(sorted(positions.tolist())) for positions, _ in epochs}) == 3


def test_class_weights_make_every_class_weigh_the_same(imbalanced_cache):
    from affectexp.training.inputs import class_weights

    _, labels = imbalanced_cache
    weights = class_weights(labels, 3)
    assert weights == pytest.approx({0: 56 / (3 * 40), 1: 56 / (3 * 10), 2: 56 / (3 * 6)})
    assert sum(weights[c] * count for c, count in enumerate(CACHE_COUNTS)) == pytest.approx(len(labels))


@pytest.mark.parametrize("outputs", [("expression",), ("expression", "affect"), ("affect",)])
def test_class_weights_weigh_the_expression_loss_alone(imbalanced_cache, outputs):
    """Each row's class weight goes to the expression loss; the valence/arousal loss of a
    multi-task model weighs every row alike, and an affect-only model gets no weights at all."""
    from affectexp.data.cache import FaceCache
    from affectexp.training.inputs import CacheBatches, class_weights

    path, labels = imbalanced_cache
    weights = class_weights(labels, 3)
    with FaceCache(path) as cache:
        batches = CacheBatches(cache, "train", 8, shuffle=True, seed=0, outputs=outputs, sample_weights=weights)
        batches.set_epoch(0)
        for index in range(len(batches)):
            batch = batches[index]
            positions = batches.order[index * 8:(index + 1) * 8]
            expected = np.array([weights[c] for c in labels[positions]], np.float32)
            if outputs == ("affect",):
                assert len(batch) == 2
            elif outputs == ("expression",):
                np.testing.assert_array_equal(batch[2], expected)
            else:
                np.testing.assert_array_equal(batch[2]["expression"], expected)
                np.testing.assert_array_equal(batch[2]["affect"], np.ones(len(positions), np.float32))


def test_streaming_reads_every_face_once_per_epoch_a_window_at_a_time(imbalanced_cache, monkeypatch):
    """More chunks than the window and than the chunks kept: each epoch reads every chunk once,
    mixes the rows of the chunks of one window, and keeps a bounded number of chunks."""
    from affectexp.data.cache import FaceCache
    from affectexp.training.inputs import SHUFFLE_WINDOW_CHUNKS, CacheBatches

    path, labels = imbalanced_cache
    chunks = math.ceil(len(labels) / CACHE_CHUNK_ROWS)
    kept = 2 * SHUFFLE_WINDOW_CHUNKS + 2
    assert chunks > kept > SHUFFLE_WINDOW_CHUNKS  # the fixture exercises eviction
    cache = FaceCache(path)
    batches = CacheBatches(cache, "train", 5, shuffle=True, seed=0, ram_budget_bytes=0)
    reads = []
    read_faces = batches.cache.read_faces
    monkeypatch.setattr(batches.cache, "read_faces",
                        lambda split, start, stop: reads.append(start) or read_faces(split, start, stop))
    try:
        orders, most_kept = [], 0
        for epoch in range(3):
            batches.set_epoch(epoch)
            reads.clear()
            for index in range(len(batches)):
                faces, _ = batches[index]
                orders.extend(positions_of(faces).tolist())
                most_kept = max(most_kept, len(batches._chunks))
            assert len(reads) == len(set(reads))  # no chunk read twice in an epoch
            if epoch == 0:  # nothing kept yet: every chunk read
                assert sorted(reads) == [CACHE_CHUNK_ROWS * c for c in range(chunks)]
    finally:
        batches.close()
        cache.close()
    assert most_kept <= kept
    epochs = np.array(orders).reshape(3, len(labels))
    for order in epochs:
        np.testing.assert_array_equal(np.sort(order), np.arange(len(labels)))
        chunk_of = order // CACHE_CHUNK_ROWS
        window_rows = SHUFFLE_WINDOW_CHUNKS * CACHE_CHUNK_ROWS
        first_window = chunk_of[:window_rows]
        assert len(set(first_window.tolist())) == SHUFFLE_WINDOW_CHUNKS  # one window: its 4 chunks only
        switches = np.count_nonzero(np.diff(first_window))
        assert switches > 2 * SHUFFLE_WINDOW_CHUNKS  # rows of the window's chunks interleaved, not chunk by chunk
    assert len({tuple(order) for order in epochs.tolist()}) == 3  # another order each epoch


def test_final_evaluation_streams_a_split_larger_than_the_ram_budget(imbalanced_cache, monkeypatch):
    import keras

    from affectexp.data.cache import FaceCache
    from affectexp.training.evaluation import predict_split

    path, labels = imbalanced_cache
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3, "softmax")])
    read_rows = []
    read_faces = FaceCache.read_faces
    monkeypatch.setattr(FaceCache, "read_faces",
                        lambda self, split, start, stop: read_rows.append(stop - start) or read_faces(self, split, start, stop))
    with FaceCache(path) as cache:
        in_memory = predict_split(model, cache, "train", 8)
        assert read_rows == [len(labels)]  # fits the default budget: read once
        read_rows.clear()
        streamed = predict_split(model, cache, "train", 8, ram_budget_bytes=0)
    assert max(read_rows) == CACHE_CHUNK_ROWS  # over the budget: a chunk at a time
    np.testing.assert_array_equal(streamed[0], labels)
    np.testing.assert_array_equal(streamed[0], in_memory[0])
    assert list(streamed[1]) == ["expression"]  # a model of one unnamed output gives class probabilities
    np.testing.assert_allclose(streamed[1]["expression"], in_memory[1]["expression"], rtol=1e-6)


def strong_augmentation_and_faces(cfg, count: int):
    """(augmentation=strong in albumentations' serialised form, the first `count` training faces)."""
    from affectexp.data.cache import FaceCache
    from affectexp.tasks.train import read_config

    settings, _ = read_config(compose_config("train", cfg.paths.root, ["augmentation=strong", "cache.size=48"]))
    serialized = settings.augmentation.transform
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


def test_each_transform_of_a_preset_draws_its_own_random_numbers():
    """albumentations seeds every transform of a pipeline alike, so a flip and a OneOf (one draw
    a face each) would apply to the same faces; here each applies regardless of the other."""
    from affectexp.training.augment import FaceAugmenter

    serialized = {"__class_fullname__": "Compose", "transforms": [
        {"__class_fullname__": "HorizontalFlip", "p": 0.5},
        {"__class_fullname__": "OneOf", "p": 0.5, "transforms": [
            {"__class_fullname__": "GaussNoise", "std_range": [0.05, 0.1], "p": 1.0}]}]}
    faces = np.full((400, 16, 16, 1), 50, np.uint8)
    faces[:, :, 8:] = 200  # dark left, light right: a flip shows
    augmented = FaceAugmenter(serialized, seed=0)(faces, 0, 0).astype(np.float32)
    flipped = augmented[:, :, :4].mean(axis=(1, 2, 3)) > 125
    noisy = augmented[:, 2:-2, 2:6].std(axis=(1, 2, 3)) > 1
    assert 0.4 < flipped.mean() < 0.6 and 0.4 < noisy.mean() < 0.6
    assert abs(np.mean(flipped & noisy) - 0.25) < 0.07  # independent: a quarter both; drawn alike: a half
