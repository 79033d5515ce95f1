"""Writing the face cache so that an interruption loses at most one segment of work.

HDF5 is not crash-safe: a process killed while writing can leave a file whose metadata is
damaged (measured: a resumed append then failed with "bad heap index"). So faces are first
written to segment files, `<cache>.parts/segment-<first row>.h5`, each renamed into place only
once complete, and the cache is assembled from complete segments at the end and renamed into
place in turn. A rerun with the same inputs (same fingerprint) skips the rows of complete
segments and produces the same file, byte for byte in its datasets, as an uninterrupted run.

A run that fails or is interrupted (a full disk, Ctrl-C) deletes the file it was writing, the
open segment's `.tmp` or the cache's `.partial`, and keeps the complete segments to resume from.
Room is checked before each file is started (see check_room): HDF5 cannot close a file whose
metadata it failed to write ("slist already enabled"), and the process then crashes at exit.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import math
import os
import resource
import shutil
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from affectexp.data.cache import COLUMNS, SCHEMA_VERSION, CacheError, create_layout

log = logging.getLogger(__name__)

SEGMENT_CHUNKS = 16  # chunks per segment: the most work an interruption can lose
FINGERPRINT_FILE = "fingerprint"
_FAILED_INDEX = "failed_index"  # segments only: table rows that produced no face, and why
_FAILED_REASON = "failed_reason"
_ROW_DATASETS = ("faces", *COLUMNS, "source_row")


# Write errors that more room (or a higher limit) cures: disk full, quota, file-size limit.
_NO_ROOM = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
# Allowances in check_room's estimate, generous on purpose (too little room must never reach
# HDF5): text bytes a row (source_row, failure reasons) and the layout's own metadata.
_TEXT_BYTES_PER_ROW = 256
_METADATA_BYTES = 256 * 1024
# Files that HDF5 could not close after a failed write: kept referenced, so that h5py never
# retries the close in a destructor, where it crashes the process (see discard).
_UNCLOSABLE: list[h5py.File] = []


def partial_path(path: Path) -> Path:
    """Where the assembled cache is written until it is complete."""
    return path.with_name(path.name + ".partial")


def parts_dir(path: Path) -> Path:
    return path.with_name(path.name + ".parts")


class CacheWriter:
    """Appends chunks of faces to segment files, then assembles the cache (see module doc)."""

    def __init__(self, path: Path, face_shape: tuple[int, int, int], chunk_rows: int, fingerprint: str):
        self.path = Path(path)
        self.parts = parts_dir(self.path)
        self.face_shape = tuple(face_shape)
        self.chunk_rows = chunk_rows
        self._prepare_parts(fingerprint)
        self.segments = sorted(self.parts.glob("segment-*.h5"))
        self.rows_done = sum(_segment_rows(s) for s in self.segments)
        self._segment: h5py.File | None = None
        self._datasets: dict[str, h5py.Dataset] = {}  # the open segment's, held: see assemble
        self._segment_chunks = 0

    def _prepare_parts(self, fingerprint: str) -> None:
        """Keep the complete segments of an interrupted run with the same inputs; drop the rest."""
        stamp = self.parts / FINGERPRINT_FILE
        if self.parts.exists() and (not stamp.exists() or stamp.read_text() != fingerprint):
            shutil.rmtree(self.parts)
        self.parts.mkdir(parents=True, exist_ok=True)
        stamp.write_text(fingerprint)
        self._drop_unfinished()

    def _drop_unfinished(self) -> None:
        # By name, not through the open segment alone: a Ctrl-C that lands while a segment is
        # being created (h5py.File returned, not yet held here) leaves a file nothing refers to.
        # The cache's lock makes every `.tmp` here this process's own.
        for unfinished in self.parts.glob("*.tmp"):
            unfinished.unlink(missing_ok=True)

    def append_chunk(self, faces: np.ndarray, columns: dict[str, np.ndarray], source_rows: list[str],
                     failed_index: np.ndarray, failed_reasons: list[str], rows_consumed: int) -> None:
        """Add one chunk of `rows_consumed` table rows: the faces it produced with their columns
        (one array per name in COLUMNS) and source rows, and the table indices and reasons of
        its rows that produced none."""
        if self._segment is None:
            self._segment = self._open_segment()
            self._datasets = {name: self._segment[name] for name in (*_ROW_DATASETS, _FAILED_INDEX, _FAILED_REASON)}
        segment, datasets = self._segment, self._datasets
        _append(datasets["faces"], faces)
        for name in COLUMNS:
            _append(datasets[name], columns[name])
        _append(datasets["source_row"], source_rows)
        _append(datasets[_FAILED_INDEX], failed_index)
        _append(datasets[_FAILED_REASON], failed_reasons)
        segment.attrs["rows_consumed"] = int(segment.attrs["rows_consumed"]) + rows_consumed
        self._segment_chunks += 1
        if self._segment_chunks == SEGMENT_CHUNKS:
            self.seal()

    def _open_segment(self) -> h5py.File:
        path = self.parts / f"segment-{self.rows_done:012d}.h5.tmp"
        check_room(path, file_bytes(SEGMENT_CHUNKS * self.chunk_rows, self.face_shape, self.chunk_rows))
        segment = h5py.File(path, "w")
        try:
            create_layout(segment, 0, self.face_shape, self.chunk_rows)
            segment.create_dataset(_FAILED_INDEX, shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(1024,))
            segment.create_dataset(_FAILED_REASON, shape=(0,), maxshape=(None,), dtype=h5py.string_dtype(),
                                   chunks=(1024,))
            segment.attrs["rows_consumed"] = 0
        except BaseException:
            discard(segment)
            raise
        return segment

    def seal(self) -> None:
        """Close the open segment and rename it into place: its rows are now done for good."""
        if self._segment is None:
            return
        tmp = Path(self._segment.filename)
        rows = int(self._segment.attrs["rows_consumed"])
        close_written(self._segment)
        self._segment, self._datasets, self._segment_chunks = None, {}, 0
        final = tmp.with_suffix("")  # drop ".tmp"
        os.replace(tmp, final)
        self.segments.append(final)
        self.rows_done += rows

    def failures(self) -> tuple[np.ndarray, list[str]]:
        """(table indices, reasons) of every row that produced no face, over all segments."""
        indices, reasons = [np.zeros(0, np.int64)], []
        for path in self.segments:
            with h5py.File(path, "r") as segment:
                indices.append(segment[_FAILED_INDEX][:])
                reasons.extend(segment[_FAILED_REASON].asstr()[:].tolist())
        return np.concatenate(indices), reasons

    def column(self, name: str) -> np.ndarray:
        """One column of every face written so far, in order."""
        return concat_column(self.segments, name)

    def finish(self, attrs: dict) -> Path:
        """Assemble the segments into the cache with `attrs`, rename it into place, drop the parts."""
        self.seal()
        assemble(self.path, self.segments, self.face_shape, self.chunk_rows, attrs)
        shutil.rmtree(self.parts)
        return self.path

    def abandon(self) -> None:
        """Delete the segments and their folder: a run that cannot become a cache."""
        self.close()
        shutil.rmtree(self.parts, ignore_errors=True)

    def close(self) -> None:
        """Stop without sealing: an unfinished segment is deleted; its rows are redone on resume."""
        if self._segment is not None:
            discard(self._segment)
            self._segment, self._datasets, self._segment_chunks = None, {}, 0
        self._drop_unfinished()


def concat_column(files: list[Path], name: str) -> np.ndarray:
    """One column (a name in COLUMNS) of the faces in `files` (segments or caches), in order."""
    parts = [np.zeros(0, COLUMNS[name])]
    for path in files:
        with h5py.File(path, "r") as file:
            parts.append(file[name][:])
    return np.concatenate(parts)


def assemble(path: Path, parts: list[Path], face_shape: tuple[int, int, int], chunk_rows: int, attrs: dict) -> Path:
    """Write the cache at `path` from the rows of `parts` (segment or shard files), in order.

    Written to <path>.partial and renamed into place only when complete; memory stays one
    chunk. Rows are written in windows of `chunk_rows` whatever the parts' sizes, so the same
    rows and attrs give the same file byte for byte, however they were split into parts
    (segments of one run, or the shards of several).
    """
    total = sum(_segment_faces(part) for part in parts)
    with replaced_when_complete(path, partial_path(path)) as partial:
        check_room(partial, file_bytes(total, face_shape, chunk_rows) + len(json.dumps(attrs)))
        cache = h5py.File(partial, "w")
        try:
            create_layout(cache, total, face_shape, chunk_rows)
            # Held until the file is closed: a dataset released while the file is open flushes its
            # chunks; on a full disk that write fails where no one can catch it, h5py prints a
            # traceback, and the file can no longer be closed (measured).
            datasets = {name: cache[name] for name in _ROW_DATASETS}
            offset = 0
            for window in _row_windows(parts, chunk_rows):
                stop = offset + len(window["faces"])
                for name, values in window.items():
                    datasets[name][offset:stop] = values
                offset = stop
            cache.attrs["schema_version"] = SCHEMA_VERSION
            for key, value in attrs.items():
                cache.attrs[key] = value if isinstance(value, (int, float, str)) else json.dumps(value)
            close_written(cache)
        except BaseException:
            discard(cache)
            raise
    return path


@contextlib.contextmanager
def replaced_when_complete(path: Path, partial: Path) -> Iterator[Path]:
    """Yield `partial` to write; renamed to `path` if the block completes, deleted if it raises."""
    try:
        yield partial
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def file_bytes(rows: int, face_shape: tuple[int, int, int], chunk_rows: int) -> int:
    """An upper bound on the size of a cache or segment file of `rows` faces (see create_layout)."""
    face_rows = math.ceil(rows / chunk_rows) * chunk_rows
    column_rows = math.ceil(rows / max(chunk_rows, 1024)) * max(chunk_rows, 1024)
    column_bytes = sum(np.dtype(dtype).itemsize for dtype in COLUMNS.values())
    text_rows = math.ceil(rows / 1024) * 1024  # source_row and the failure columns: 1024-row chunks
    return (face_rows * math.prod(face_shape) + column_rows * column_bytes
            + text_rows * 3 * 16 + rows * _TEXT_BYTES_PER_ROW + _METADATA_BYTES)


def check_room(path: Path, nbytes: int) -> None:
    """OSError (ENOSPC, or EFBIG past this process's file-size limit) unless `nbytes` can be written
    at `path`. Checked before HDF5 starts the file: see the module docstring."""
    free = shutil.disk_usage(path.parent).free
    if free < nbytes:
        raise OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)}: {path} needs about {nbytes / 2**20:.1f} MB, "
                                    f"{free / 2**20:.1f} MB are free")
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and limit < nbytes:
        raise OSError(errno.EFBIG, f"{os.strerror(errno.EFBIG)}: {path} needs about {nbytes / 2**20:.1f} MB, "
                                   f"past this process's file-size limit of {limit / 2**20:.1f} MB (ulimit -f)")


def close_written(file: h5py.File) -> None:
    """Close a file being written, flushing first: a flush that fails leaves it for discard()
    to delete, where a close that fails half-way leaves datasets that crash the process when
    released (measured: segmentation fault)."""
    file.flush()
    file.close()


def discard(file: h5py.File) -> None:
    """Delete an HDF5 file that is being written, and close it without keeping anything.

    Emptied first, through its descriptor: on a full disk that frees its space, so that the
    close can write what HDF5 still holds (a close that fails leaves HDF5 unable to close the
    file at all; it is then kept open in _UNCLOSABLE until the process ends).
    """
    path = Path(file.filename)
    if file.id.valid:
        os.ftruncate(file.id.get_vfd_handle(), 0)
        path.unlink(missing_ok=True)
        try:
            file.close()
        except (OSError, RuntimeError):  # h5py raises either for a failed write
            _UNCLOSABLE.append(file)
    path.unlink(missing_ok=True)


@contextlib.contextmanager
def full_disk_as_error(cache_path: Path) -> Iterator[None]:
    """Turn a write that failed for want of room into a CacheError naming the file and the folder."""
    try:
        yield
    except OSError as error:
        if error.errno not in _NO_ROOM:
            raise
        raise CacheError(
            f"cache.path: no room to write {cache_path} ({error.strerror}); free space in {cache_path.parent} "
            "or choose another cache.path, then rerun the same command to continue"
        ) from None


def _append(dataset: h5py.Dataset, values) -> None:
    start = dataset.shape[0]
    dataset.resize(start + len(values), axis=0)
    if len(values):
        dataset[start:] = values


def _segment_rows(path: Path) -> int:
    with h5py.File(path, "r") as segment:
        return int(segment.attrs["rows_consumed"])


def _segment_faces(path: Path) -> int:
    with h5py.File(path, "r") as segment:
        return segment["faces"].shape[0]


def _row_windows(parts: list[Path], step: int) -> Iterator[dict[str, np.ndarray]]:
    """Every row dataset of `parts`, concatenated in order and cut into windows of `step`
    rows (the last may be shorter); one window in memory at a time."""
    pending: dict[str, list] = {name: [] for name in _ROW_DATASETS}
    buffered = 0
    for part in parts:
        with h5py.File(part, "r") as source:
            count, start = source["faces"].shape[0], 0
            while start < count:
                take = min(step - buffered, count - start)
                for name in _ROW_DATASETS:
                    pending[name].append(source[name][start:start + take])
                buffered, start = buffered + take, start + take
                if buffered == step:
                    yield {name: np.concatenate(values) for name, values in pending.items()}
                    pending, buffered = {name: [] for name in _ROW_DATASETS}, 0
    if buffered:
        yield {name: np.concatenate(values) for name, values in pending.items()}
