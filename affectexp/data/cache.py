"""The HDF5 face cache: written once by preprocessing, streamed by training.

Layout (schema version 1), N faces stored split by split (train, then val, then test) so
that each split is one contiguous, chunk-aligned-in-order range:
    faces       (N, H, W, C) uint8, chunked by `chunk_rows`, uncompressed (compressed chunks
                make random batch reads 70-120x slower)
    labels      (N,) int16    position in the class set (attrs["class_names"])
    expression  (N,) int16    the source's AffectNet expression code
    valence     (N,) float32
    arousal     (N,) float32
    split       (N,) uint8    index into SPLITS
    source_row  (N,) str      where the face came from, e.g. "training.csv:12"
attrs: schema_version, class_names (JSON), split_ranges (JSON {split: [start, stop]}),
config (JSON of the preprocessing config), skipped_counts (JSON), fingerprint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from affectexp.errors import UserInputError

SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")

_COLUMNS = {
    "labels": np.int16,
    "expression": np.int16,
    "valence": np.float32,
    "arousal": np.float32,
    "split": np.uint8,
}


_FAILED_INDEX = "failed_index"  # only in a partial file: table rows that produced no face
_FAILED_REASON = "failed_reason"


class CacheError(UserInputError):
    """A cache that is missing, unfinished or of another schema version."""


def partial_path(path: Path) -> Path:
    """Where a cache is written until it is complete."""
    return path.with_name(path.name + ".partial")


class CacheWriter:
    """Appends faces chunk by chunk to `<cache>.partial`, renamed into place by finish().

    After every chunk the file records how many source rows it has consumed, so a run that
    was interrupted (Ctrl-C, kill -9) and restarted with the same inputs (same fingerprint)
    continues after the last complete chunk and produces the same file as an uninterrupted
    run. A partial file from other inputs, or one too damaged to open, is started afresh.
    """

    def __init__(self, path: Path, face_shape: tuple[int, int, int], chunk_rows: int, fingerprint: str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.partial = partial_path(self.path)
        self.face_shape = tuple(face_shape)
        self.fingerprint = fingerprint
        self.file = self._reopen() or self._create(chunk_rows)

    def _create(self, chunk_rows: int) -> h5py.File:
        file = h5py.File(self.partial, "w")
        file.create_dataset("faces", shape=(0, *self.face_shape), maxshape=(None, *self.face_shape), dtype=np.uint8,
                            chunks=(chunk_rows, *self.face_shape))
        for name, dtype in _COLUMNS.items():
            file.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(max(chunk_rows, 1024),))
        file.create_dataset("source_row", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype(), chunks=(1024,))
        file.create_dataset(_FAILED_INDEX, shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(1024,))
        file.create_dataset(_FAILED_REASON, shape=(0,), maxshape=(None,), dtype=h5py.string_dtype(), chunks=(1024,))
        file.attrs.update({"fingerprint": self.fingerprint, "rows_done": 0, "faces_done": 0, "failed_done": 0})
        return file

    def _reopen(self) -> h5py.File | None:
        """The partial file of an interrupted run with the same inputs, cut back to its last chunk."""
        if not self.partial.exists():
            return None
        try:
            file = h5py.File(self.partial, "a")
        except OSError:
            return None
        try:
            matches = file.attrs.get("fingerprint") == self.fingerprint and file["faces"].shape[1:] == self.face_shape
            if matches:
                faces_done, failed_done = int(file.attrs["faces_done"]), int(file.attrs["failed_done"])
                for name in ("faces", *_COLUMNS, "source_row"):
                    file[name].resize(faces_done, axis=0)
                for name in (_FAILED_INDEX, _FAILED_REASON):
                    file[name].resize(failed_done, axis=0)
                return file
        except (KeyError, OSError):
            pass
        file.close()
        return None

    @property
    def rows_done(self) -> int:
        """Source rows already consumed (written or failed) by complete chunks."""
        return int(self.file.attrs["rows_done"])

    @property
    def faces_done(self) -> int:
        return int(self.file.attrs["faces_done"])

    def append_chunk(self, faces: np.ndarray, columns: dict[str, np.ndarray], source_rows: list[str],
                     failed_index: np.ndarray, failed_reasons: list[str], rows_consumed: int) -> None:
        """Add one chunk: its faces with their columns (one array per layout column) and the
        table indices and reasons of its rows that produced no face."""
        start, end = self.faces_done, self.faces_done + len(faces)
        for name in ("faces", *_COLUMNS, "source_row"):
            self.file[name].resize(end, axis=0)
        self.file["faces"][start:end] = faces
        for name in _COLUMNS:
            self.file[name][start:end] = columns[name]
        self.file["source_row"][start:end] = source_rows
        failed_start = int(self.file.attrs["failed_done"])
        failed_end = failed_start + len(failed_index)
        for name, values in ((_FAILED_INDEX, failed_index), (_FAILED_REASON, failed_reasons)):
            self.file[name].resize(failed_end, axis=0)
            self.file[name][failed_start:failed_end] = values
        self.file.flush()
        # The counters move only once the chunk's data is in the file.
        self.file.attrs.update({"rows_done": self.rows_done + rows_consumed, "faces_done": end,
                                "failed_done": failed_end})
        self.file.flush()

    def failures(self) -> tuple[np.ndarray, list[str]]:
        """(table indices, reasons) of every row that produced no face, resumed runs included."""
        return self.file[_FAILED_INDEX][:], self.file[_FAILED_REASON].asstr()[:].tolist()

    def column(self, name: str) -> np.ndarray:
        return self.file[name][:]

    def finish(self, attrs: dict) -> Path:
        """Write the attributes, close, and atomically move the file to its final name."""
        for name in (_FAILED_INDEX, _FAILED_REASON):
            del self.file[name]
        for key in ("rows_done", "faces_done", "failed_done"):
            del self.file.attrs[key]
        self.file.attrs["schema_version"] = SCHEMA_VERSION
        for key, value in attrs.items():
            self.file.attrs[key] = value if isinstance(value, (int, float, str)) else json.dumps(value)
        self.file.close()
        os.replace(self.partial, self.path)
        return self.path

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()


class FaceCache:
    """Read access to a finished cache. Refuses a cache of another schema version."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise CacheError(f"cache.path: {self.path} does not exist")
        self.file = h5py.File(self.path, "r")
        version = int(self.file.attrs.get("schema_version", -1))
        if version != SCHEMA_VERSION:
            self.file.close()
            raise CacheError(
                f"{self.path}: cache schema version {version}, this affectexp reads version {SCHEMA_VERSION}; "
                "rebuild it with preprocess.py and overwrite=true"
            )
        self.faces = self.file["faces"]
        self.class_names: list[str] = json.loads(self.file.attrs["class_names"])
        self.split_ranges: dict[str, tuple[int, int]] = {
            k: tuple(v) for k, v in json.loads(self.file.attrs["split_ranges"]).items()
        }

    @property
    def face_shape(self) -> tuple[int, int, int]:
        return tuple(self.faces.shape[1:])

    @property
    def chunk_rows(self) -> int:
        return self.faces.chunks[0]

    def attr(self, key: str):
        """A JSON attribute, decoded."""
        return json.loads(self.file.attrs[key])

    def split_size(self, split: str) -> int:
        start, stop = self.split_ranges[split]
        return stop - start

    def labels(self, split: str) -> np.ndarray:
        start, stop = self.split_ranges[split]
        return self.file["labels"][start:stop].astype(np.int64)

    def read_faces(self, split: str, start: int, stop: int) -> np.ndarray:
        """Faces [start, stop) of a split (positions within the split), (n, H, W, C) uint8."""
        offset = self.split_ranges[split][0]
        return self.faces[offset + start:offset + stop]

    def close(self) -> None:
        if self.file.id.valid:
            self.file.close()

    def __enter__(self) -> "FaceCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
