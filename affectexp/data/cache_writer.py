"""Writing the face cache so that an interruption loses at most one segment of work.

HDF5 is not crash-safe: a process killed while writing can leave a file whose metadata is
damaged (measured: a resumed append then failed with "bad heap index"). So faces are first
written to segment files, `<cache>.parts/segment-<first row>.h5`, each renamed into place only
once complete, and the cache is assembled from complete segments at the end and renamed into
place in turn. A rerun with the same inputs (same fingerprint) skips the rows of complete
segments and produces the same file, byte for byte in its datasets, as an uninterrupted run.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import h5py
import numpy as np

from affectexp.data.cache import COLUMNS, SCHEMA_VERSION, create_layout

log = logging.getLogger(__name__)

SEGMENT_CHUNKS = 16  # chunks per segment: the most work an interruption can lose
FINGERPRINT_FILE = "fingerprint"
_FAILED_INDEX = "failed_index"  # segments only: table rows that produced no face, and why
_FAILED_REASON = "failed_reason"
_ROW_DATASETS = ("faces", *COLUMNS, "source_row")


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
        self._segment_chunks = 0

    def _prepare_parts(self, fingerprint: str) -> None:
        """Keep the complete segments of an interrupted run with the same inputs; drop the rest."""
        stamp = self.parts / FINGERPRINT_FILE
        if self.parts.exists() and (not stamp.exists() or stamp.read_text() != fingerprint):
            shutil.rmtree(self.parts)
        self.parts.mkdir(parents=True, exist_ok=True)
        stamp.write_text(fingerprint)
        for unfinished in self.parts.glob("*.tmp"):
            unfinished.unlink()

    def append_chunk(self, faces: np.ndarray, columns: dict[str, np.ndarray], source_rows: list[str],
                     failed_index: np.ndarray, failed_reasons: list[str], rows_consumed: int) -> None:
        """Add one chunk of `rows_consumed` table rows: the faces it produced with their columns
        (one array per name in COLUMNS) and source rows, and the table indices and reasons of
        its rows that produced none."""
        if self._segment is None:
            self._segment = self._open_segment()
        segment = self._segment
        _append(segment, "faces", faces)
        for name in COLUMNS:
            _append(segment, name, columns[name])
        _append(segment, "source_row", source_rows)
        _append(segment, _FAILED_INDEX, failed_index)
        _append(segment, _FAILED_REASON, failed_reasons)
        segment.attrs["rows_consumed"] = int(segment.attrs["rows_consumed"]) + rows_consumed
        self._segment_chunks += 1
        if self._segment_chunks == SEGMENT_CHUNKS:
            self.seal()

    def _open_segment(self) -> h5py.File:
        path = self.parts / f"segment-{self.rows_done:012d}.h5.tmp"
        segment = h5py.File(path, "w")
        create_layout(segment, 0, self.face_shape, self.chunk_rows)
        segment.create_dataset(_FAILED_INDEX, shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(1024,))
        segment.create_dataset(_FAILED_REASON, shape=(0,), maxshape=(None,), dtype=h5py.string_dtype(), chunks=(1024,))
        segment.attrs["rows_consumed"] = 0
        return segment

    def seal(self) -> None:
        """Close the open segment and rename it into place: its rows are now done for good."""
        if self._segment is None:
            return
        tmp = Path(self._segment.filename)
        rows = int(self._segment.attrs["rows_consumed"])
        self._segment.close()
        self._segment, self._segment_chunks = None, 0
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
        """Stop without sealing: an unfinished segment stays a .tmp and is redone on resume."""
        if self._segment is not None and self._segment.id.valid:
            self._segment.close()


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
    partial = partial_path(path)
    with h5py.File(partial, "w") as cache:
        create_layout(cache, total, face_shape, chunk_rows)
        offset = 0
        for window in _row_windows(parts, chunk_rows):
            stop = offset + len(window["faces"])
            for name, values in window.items():
                cache[name][offset:stop] = values
            offset = stop
        cache.attrs["schema_version"] = SCHEMA_VERSION
        for key, value in attrs.items():
            cache.attrs[key] = value if isinstance(value, (int, float, str)) else json.dumps(value)
    os.replace(partial, path)
    return path


def _append(file: h5py.File, name: str, values) -> None:
    dataset = file[name]
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
