"""The cache writer on its own, in seconds: segments sealed every SEGMENT_CHUNKS chunks, a
resume that keeps exactly the complete segments, assembly in order whatever the parts' sizes,
and the room check that runs before HDF5 starts a file. (test_faults.py runs the same through
preprocess.py on full disks and Ctrl-C; these are the fast tests mutation testing runs.)"""

from __future__ import annotations

import errno
import resource

import h5py
import numpy as np
import pytest

from affectexp.data import cache_writer
from affectexp.data.cache import COLUMNS
from affectexp.data.cache_writer import (SEGMENT_CHUNKS, CacheWriter, assemble, check_room, file_bytes,
                                         partial_path, parts_dir)

SHAPE = (4, 4, 1)
CHUNK = 3


def chunk(first: int, rows: int = CHUNK, failed: int = 0):
    """append_chunk's arguments for table rows first.. first+rows-1: each face filled with its
    row number, its columns derived from it; the last `failed` rows produced no face."""
    kept = np.arange(first, first + rows - failed)
    faces = np.broadcast_to(kept[:, None, None, None] % 256, (len(kept), *SHAPE)).astype(np.uint8)
    columns = {name: (kept % 5).astype(dtype) for name, dtype in COLUMNS.items()}
    failed_index = np.arange(first + rows - failed, first + rows)
    return faces, columns, [f"list.csv:{r}" for r in kept], failed_index, ["missing_file"] * failed, rows


def write(writer: CacheWriter, first_chunk: int, chunks: int) -> None:
    for number in range(first_chunk, first_chunk + chunks):
        writer.append_chunk(*chunk(number * CHUNK))


def test_segments_are_sealed_every_segment_chunks_and_a_resume_keeps_exactly_those(tmp_path):
    path = tmp_path / "cache.h5"
    writer = CacheWriter(path, SHAPE, CHUNK, "inputs-1")
    write(writer, 0, SEGMENT_CHUNKS + 2)  # one complete segment, two chunks of the next
    assert [s.name for s in writer.segments] == ["segment-000000000000.h5"]
    assert writer.rows_done == SEGMENT_CHUNKS * CHUNK
    assert len(list(parts_dir(path).glob("*.tmp"))) == 1
    writer.close()  # interrupted: the open segment goes, the complete one stays
    assert not list(parts_dir(path).glob("*.tmp"))

    resumed = CacheWriter(path, SHAPE, CHUNK, "inputs-1")
    assert resumed.rows_done == SEGMENT_CHUNKS * CHUNK and len(resumed.segments) == 1
    write(resumed, SEGMENT_CHUNKS, 2)
    resumed.append_chunk(*chunk((SEGMENT_CHUNKS + 2) * CHUNK, failed=2))
    resumed.finish({"fingerprint": "inputs-1", "class_names": ["a", "b"]})
    assert not parts_dir(path).exists() and not partial_path(path).exists()

    rows = (SEGMENT_CHUNKS + 3) * CHUNK
    kept = np.array([r for r in range(rows) if r < rows - 2])
    with h5py.File(path) as cache:
        np.testing.assert_array_equal(cache["faces"][:, 0, 0, 0], kept % 256)
        for name, dtype in COLUMNS.items():
            assert cache[name].dtype == dtype
            np.testing.assert_array_equal(cache[name][:], kept % 5)
        assert cache["source_row"].asstr()[:].tolist() == [f"list.csv:{r}" for r in kept]
        assert cache.attrs["fingerprint"] == "inputs-1" and cache.attrs["class_names"] == '["a", "b"]'
        assert cache.attrs["schema_version"] == 1
    assert path.stat().st_size <= file_bytes(len(kept), SHAPE, CHUNK)


def test_failed_rows_are_kept_with_their_reasons_across_segments(tmp_path):
    writer = CacheWriter(tmp_path / "cache.h5", SHAPE, CHUNK, "f")
    writer.append_chunk(*chunk(0, failed=1))
    write(writer, 1, SEGMENT_CHUNKS - 1)  # seals the first segment
    writer.append_chunk(*chunk(SEGMENT_CHUNKS * CHUNK, failed=2))
    writer.seal()
    indices, reasons = writer.failures()
    assert indices.tolist() == [2, SEGMENT_CHUNKS * CHUNK + 1, SEGMENT_CHUNKS * CHUNK + 2]
    assert reasons == ["missing_file"] * 3
    assert writer.column("labels").tolist() == [r % 5 for r in range(SEGMENT_CHUNKS * CHUNK + 3) if r not in indices]
    writer.abandon()
    assert not parts_dir(tmp_path / "cache.h5").exists()


def test_other_inputs_start_again(tmp_path):
    path = tmp_path / "cache.h5"
    writer = CacheWriter(path, SHAPE, CHUNK, "inputs-1")
    write(writer, 0, SEGMENT_CHUNKS)
    writer.close()
    assert CacheWriter(path, SHAPE, CHUNK, "inputs-1").rows_done == SEGMENT_CHUNKS * CHUNK
    other = CacheWriter(path, SHAPE, CHUNK, "inputs-2")
    assert other.rows_done == 0 and other.segments == []
    assert (parts_dir(path) / "fingerprint").read_text() == "inputs-2"


@pytest.mark.parametrize("sizes", [[5, 2, 7], [14], [1] * 14])
def test_assembly_is_the_same_file_whatever_the_parts_sizes(tmp_path, sizes):
    """Shards and segments are cut anywhere: the cache's datasets must not show where."""
    def parts_of(folder, sizes):
        folder.mkdir()
        parts, first = [], 0
        for size in sizes:
            writer = CacheWriter(folder / f"part{first}.h5", SHAPE, CHUNK, "x")
            writer.append_chunk(*chunk(first, size))
            writer.seal()
            parts.append(writer.segments[0])
            first += size
        return parts

    one = assemble(tmp_path / "one.h5", parts_of(tmp_path / "a", [14]), SHAPE, CHUNK, {"k": 1})
    many = assemble(tmp_path / "many.h5", parts_of(tmp_path / "b", sizes), SHAPE, CHUNK, {"k": 1})
    with h5py.File(one) as a, h5py.File(many) as b:
        assert set(a) == set(b)
        for name in a:
            np.testing.assert_array_equal(a[name][:], b[name][:])
            assert a[name].chunks == b[name].chunks
        np.testing.assert_array_equal(a["faces"][:, 0, 0, 0], np.arange(14))


def test_room_is_checked_against_the_free_space(tmp_path):
    free = cache_writer.shutil.disk_usage(tmp_path).free
    check_room(tmp_path / "cache.h5", 1024)
    with pytest.raises(OSError) as error:
        check_room(tmp_path / "cache.h5", free + 2**30)
    assert error.value.errno == errno.ENOSPC
    assert str(tmp_path / "cache.h5") in str(error.value) and "MB are free" in str(error.value)


def test_room_is_checked_against_the_file_size_limit(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    limit = 4 << 20
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        check_room(tmp_path / "cache.h5", limit // 2)
        with pytest.raises(OSError) as error:
            check_room(tmp_path / "cache.h5", limit + 1)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert error.value.errno == errno.EFBIG and "ulimit -f" in str(error.value) and "4.0 MB" in str(error.value)


@pytest.mark.parametrize("rows", [1, CHUNK, 1025])
def test_the_size_estimate_bounds_the_written_file_and_stays_close(tmp_path, rows):
    faces_bytes = rows * int(np.prod(SHAPE))
    estimate = file_bytes(rows, SHAPE, CHUNK)
    writer = CacheWriter(tmp_path / "cache.h5", SHAPE, CHUNK, "s")
    for first in range(0, rows, CHUNK):
        writer.append_chunk(*chunk(first, min(CHUNK, rows - first)))
    path = writer.finish({})
    assert faces_bytes < path.stat().st_size <= estimate
    # Generous, not wild: the allowances per row and for metadata only.
    assert estimate <= faces_bytes + rows * 300 + 2048 * 64 + 512 * 1024
