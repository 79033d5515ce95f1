"""The table every source produces: one row per face to crop, in AffectNet's label space.

Columns of a row table (pandas DataFrame):
    row_id      str    where the row came from, e.g. "training.csv:12" (line number, 1-based)
    path        str    absolute path of the image file
    x, y, w, h  float  face box in pixels (x is the column), NaN when the source has no box
    landmarks   str    AffectNet's 'x1;y1;...' string, or "" when the source has none
    expression  int    AffectNet expression code (0..10)
    valence     float  [-1, 1], or -2 where not annotated
    arousal     float  [-1, 1], or -2 where not annotated
    split       category  "train", "val" or "test" as the source defines it ("train" rows
                       may later lose a part to "val", see splits.py)
The parent holds this table for every row, so compact() stores it in about 150 bytes a row
(strings in Arrow buffers, a categorical split): a million rows stay around 150 MB.

Optional columns, added only by the sources that need them:
    pixels_offset, pixels_length  int64  the face is not an image file but the `pixels_length`
                bytes at `pixels_offset` in `path`: space-separated grey values of a square
                image (FER2013's `pixels` field). Workers read just those bytes, so the parent
                never holds the pixels of more than the chunks in flight.

Rows a source refuses are returned beside the table as a skipped table (row_id, path, reason).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from affectexp.data.cache import SPLITS
from affectexp.errors import UserInputError

SKIPPED_COLUMNS = ("row_id", "path", "reason")
PIXEL_SPAN_COLUMNS = ("pixels_offset", "pixels_length")
SPLIT_DTYPE = pd.CategoricalDtype(list(SPLITS))
_COMPACT_DTYPES = {"row_id": "str", "path": "str", "landmarks": "str", "expression": np.int16,
                   "valence": np.float32, "arousal": np.float32, "split": SPLIT_DTYPE}


class SourceError(UserInputError):
    """A data set that cannot be read at all; raised before any image is touched."""


@dataclass
class SourceRows:
    rows: pd.DataFrame
    skipped: pd.DataFrame


class Source(Protocol):
    """What conf/dataset/<name>.yaml's `_target_` builds."""

    name: str
    # The dataset config values the source decided itself while reading (AffectNet: the lists
    # and images folders it found), spelt as the config would set them; {} when it decided
    # nothing. Recorded with the cache by recorded_content().
    resolved: dict
    # Dataset config keys left out of that record because their values change nothing the
    # source reads: keys added later, at the value that gives what the source read before they
    # existed, so that caches built then keep their fingerprint. () for most sources.
    unrecorded: tuple[str, ...]

    def prepare(self) -> None:
        """Make the data available (e.g. generate it); not timed as preprocessing."""

    def read(self, landmarks: bool = False) -> SourceRows:
        """The row table and the rows refused; raises SourceError before any image is opened.

        landmarks: fill the landmarks column where the source has them (faces.align needs
        them; they are about 1 KB of text per row, so they are not read otherwise).
        """


def recorded_content(content: dict, source: Source) -> dict:
    """The content sections (tasks/preprocess.content_config) with what the source decided while reading
    (`source.resolved`) in their dataset section, less its `source.unrecorded` keys: what the
    cache's attributes and fingerprint record, so they name the files that were read, and
    passing it back reproduces the cache. `content` is not changed."""
    if not source.resolved and not source.unrecorded:
        return content
    dataset = {k: v for k, v in content["dataset"].items() if k not in source.unrecorded}
    if source.resolved:
        dataset = OmegaConf.to_container(OmegaConf.merge(dataset, source.resolved))
    return {**content, "dataset": dataset}


def check_root(root: Path) -> None:
    """Stop before any work when the data set's root folder is not there."""
    if not root.is_dir():
        raise SourceError(f"dataset.root: {root} does not exist or is not a folder")


def compact(rows: pd.DataFrame) -> pd.DataFrame:
    """A row table in its compact dtypes (see the module doc); call it on each part a source
    builds, so that concatenating the parts never holds a bulky copy."""
    return rows.astype(_COMPACT_DTYPES)


def empty_skipped() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype=object) for c in SKIPPED_COLUMNS})


def skipped_rows(frame: pd.DataFrame, reason: str) -> pd.DataFrame:
    """The (row_id, path, reason) rows of the part of a row table that is dropped for `reason`."""
    return pd.DataFrame({"row_id": frame["row_id"].values, "path": frame["path"].values, "reason": reason})


def split_off(rows: pd.DataFrame, drop_mask, reason: str, skipped: list[pd.DataFrame]) -> pd.DataFrame:
    """Remove the rows where `drop_mask` holds, recording them in `skipped` under `reason`."""
    if not drop_mask.any():
        return rows  # nothing to drop: no copy of the table
    skipped.append(skipped_rows(rows[drop_mask], reason))
    return rows[~drop_mask]


def concat_skipped(parts: list[pd.DataFrame]) -> pd.DataFrame:
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else empty_skipped()


def inside_root(root: str, relative_paths: pd.Series) -> pd.Series:
    """True where root/relative_path stays inside root once '..' and absolute parts are resolved.

    Purely lexical, so it costs no file-system call per row; a CSV can never make the
    preprocessor open a file outside the data set.
    """
    root = os.path.normpath(os.path.abspath(root))
    prefix = root + os.sep

    def stays_inside(relative: str) -> bool:
        full = os.path.normpath(os.path.join(root, relative))
        return full.startswith(prefix)

    return relative_paths.astype(str).map(stays_inside).astype(bool)
