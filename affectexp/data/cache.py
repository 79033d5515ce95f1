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
    (cache_writer.py writes it.)
attrs: schema_version, class_names (JSON), split_ranges (JSON {split: [start, stop]}),
config (JSON of the preprocessing config), skipped_counts (JSON), fingerprint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import h5py
import numpy as np

from affectexp.data.faces import FaceSpec
from affectexp.errors import UserInputError

SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")

COLUMNS = {
    "labels": np.int16,
    "expression": np.int16,
    "valence": np.float32,
    "arousal": np.float32,
    "split": np.uint8,
}


class CacheError(UserInputError):
    """A cache that is missing, unfinished, unreadable or of another schema version."""


REBUILD = "rebuild it with preprocess.py and overwrite=true"


def _open_failure(error: OSError) -> str:
    """What h5py's "Unable to open file (<detail>)" means, in a few words."""
    detail = str(error).rpartition("(")[2].rstrip(")")
    if "file signature not found" in detail:
        return "not an HDF5 file"
    if "truncated file" in detail:
        return "truncated: shorter than its header says, as after an interrupted copy"
    return detail


def create_layout(file: h5py.File, rows: int, face_shape: tuple[int, int, int], chunk_rows: int) -> None:
    """Create the layout's datasets in `file` with `rows` rows, growable along axis 0."""
    maxrows = None
    file.create_dataset("faces", shape=(rows, *face_shape), maxshape=(maxrows, *face_shape), dtype=np.uint8,
                        chunks=(chunk_rows, *face_shape))
    for name, dtype in COLUMNS.items():
        file.create_dataset(name, shape=(rows,), maxshape=(maxrows,), dtype=dtype, chunks=(max(chunk_rows, 1024),))
    file.create_dataset("source_row", shape=(rows,), maxshape=(maxrows,), dtype=h5py.string_dtype(),
                        chunks=(1024,))


def check_not_a_folder(path: Path) -> None:
    """CacheError for a cache.path that names a folder: a cache is one file."""
    if path.is_dir():
        raise CacheError(f"cache.path: {path} is a folder; a cache is one file: give its path, "
                         f"such as {path / 'faces.h5'}")


class FaceCache:
    """Read access to a finished cache. Refuses, naming the file, one that is not an HDF5 file,
    is truncated or damaged, or is of another schema version."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        check_not_a_folder(self.path)
        if not self.path.is_file():
            raise CacheError(f"cache.path: {self.path} does not exist")
        try:
            self.file = h5py.File(self.path, "r")
        except OSError as error:
            raise CacheError(f"cache.path: {self.path} cannot be read as a cache ({_open_failure(error)}); "
                             f"{REBUILD}") from None
        try:
            self._read_layout()
        except BaseException:
            self.file.close()
            raise

    def _read_layout(self) -> None:
        if "schema_version" not in self.file.attrs:
            raise CacheError(f"cache.path: {self.path} is an HDF5 file but not a face cache; {REBUILD}")
        version = int(self.file.attrs["schema_version"])
        if version != SCHEMA_VERSION:
            raise CacheError(
                f"{self.path}: cache schema version {version}, this affectexp reads version {SCHEMA_VERSION}; {REBUILD}"
            )
        try:
            self.faces = self.file["faces"]
            self.class_names: list[str] = json.loads(self.file.attrs["class_names"])
            self.split_ranges: dict[str, tuple[int, int]] = {
                k: tuple(v) for k, v in json.loads(self.file.attrs["split_ranges"]).items()
            }
        except (KeyError, ValueError) as error:  # ValueError: JSON that does not parse
            raise CacheError(f"cache.path: {self.path} is damaged ({error}); {REBUILD}") from None

    @property
    def face_shape(self) -> tuple[int, int, int]:
        return tuple(self.faces.shape[1:])

    @property
    def chunk_rows(self) -> int:
        return self.faces.chunks[0]

    @property
    def fingerprint(self) -> str:
        """The preprocessing's fingerprint of the cache's content (its inputs and settings)."""
        return str(self.file.attrs.get("fingerprint", ""))

    @property
    def face_spec(self) -> FaceSpec:
        """How the cache's faces were cut out (its preprocessing config), for cutting faces the same way."""
        return FaceSpec.from_content(self.attr("config"))

    def attr(self, key: str):
        """A JSON attribute, decoded."""
        return json.loads(self.file.attrs[key])

    def split_size(self, split: str) -> int:
        start, stop = self.split_ranges[split]
        return stop - start

    def labels(self, split: str) -> np.ndarray:
        start, stop = self.split_ranges[split]
        return self.file["labels"][start:stop].astype(np.int64)

    def affect(self, split: str) -> np.ndarray:
        """(n, 2) float32 (valence, arousal) of a split; -2 where not annotated."""
        start, stop = self.split_ranges[split]
        return np.stack([self.file["valence"][start:stop], self.file["arousal"][start:stop]], axis=1).astype(np.float32)

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
