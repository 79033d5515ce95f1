"""FER2013 as distributed: one CSV (`emotion,pixels,Usage`) holding 48x48 grey faces as text.

The pixels are never loaded here: the reader records where each row's `pixels` field lies in
the file (byte offset and length) and the workers read just those bytes, so the parent's
memory does not grow with the 290 MB of pixel text.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from affectexp.data.affectnet_layout import NOT_ANNOTATED
from affectexp.data.labels import fer2013_to_affectnet
from affectexp.data.sources.rows import SourceError, SourceRows, check_root, compact, concat_skipped, split_off

REQUIRED_COLUMNS = ("emotion", "pixels")
USAGE_COLUMN = "Usage"  # optional: without it every row is a training row
USAGE_SPLITS = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}


class Fer2013Source:
    """Reads fer2013.csv, including the variant whose header has ' pixels' and ' Usage'.

    Args:
        name: the data set's name (used in cache file names).
        root: the folder holding the CSV.
        file: the CSV's name inside root.
    """

    def __init__(self, name: str, root: str, file: str = "fer2013.csv"):
        self.name = name
        self.root = Path(root)
        self.file = file
        self.resolved: dict = {}  # the file is named by the config: nothing to decide
        self.unrecorded: tuple[str, ...] = ()

    def prepare(self) -> None:
        """Nothing to do: the CSV is read where it lies."""

    def read(self, landmarks: bool = False) -> SourceRows:
        """One row per CSV line; raises SourceError before any face is decoded. FER2013 has no
        landmarks: `landmarks` changes nothing."""
        check_root(self.root)
        csv_path = self.root / self.file
        if not csv_path.is_file():
            raise SourceError(f"{csv_path}: file not found (dataset.file: FER2013's CSV inside dataset.root)")
        lines = pd.DataFrame(list(scan_lines(csv_path)),
                             columns=["line", "emotion", "usage", "pixels_offset", "pixels_length"])
        return fer_rows(lines, csv_path)


def header_columns(csv_path: Path, first_line: bytes) -> dict[str, int]:
    """Column name -> position, names stripped (a variant has ' pixels', ' Usage').

    Raises SourceError naming the file and the expected vs found columns.
    """
    expected = ",".join((*REQUIRED_COLUMNS, USAGE_COLUMN))
    text = first_line.decode("utf-8-sig", errors="replace").strip()
    if not text:
        raise SourceError(f"{csv_path}: empty file; expected columns {expected}")
    if not text.isprintable():  # never echo a binary file's bytes to the terminal
        raise SourceError(f"{csv_path}: line 1 is not UTF-8 text (a binary file, or another encoding); "
                          f"expected columns {expected}")
    found = [name.strip().strip('"') for name in text.split(",")]
    if not set(REQUIRED_COLUMNS) <= set(found):
        raise SourceError(f"{csv_path}: expected columns {expected}; found {','.join(found)}")
    return {name: i for i, name in enumerate(found)}


def scan_lines(csv_path: Path) -> Iterator[tuple[int, str, str, int, int]]:
    """(line number, emotion, usage, pixels offset, pixels length) of each non-blank data line.

    Streams the file one line (about 9 KB) at a time. A line with another number of fields
    than the header yields offset -1, reported as a bad row.
    """
    with open(csv_path, "rb") as handle:
        columns = header_columns(csv_path, handle.readline())
        offset = handle.tell()
        for number, line in enumerate(handle, start=2):
            if line.strip():
                yield (number, *_parse_line(line, offset, columns))
            offset += len(line)


def _parse_line(line: bytes, offset: int, columns: dict[str, int]) -> tuple[str, str, int, int]:
    """(emotion, usage, pixels offset, pixels length) of one data line starting at byte `offset`."""
    fields = line.rstrip(b"\r\n").split(b",")
    if len(fields) != len(columns):
        return "", "", -1, 0
    pixels_at = columns["pixels"]
    start = offset + sum(len(field) + 1 for field in fields[:pixels_at])
    pixels_offset, pixels_length = _unquoted(start, fields[pixels_at])
    usage = _text(fields[columns[USAGE_COLUMN]]) if USAGE_COLUMN in columns else "Training"
    return _text(fields[columns["emotion"]]), usage, pixels_offset, pixels_length


def _text(field: bytes) -> str:
    return field.strip().strip(b'"').decode("utf-8", errors="replace")


def _unquoted(start: int, field: bytes) -> tuple[int, int]:
    """(offset, length) of a field's content, without the quotes some exports put around it."""
    if len(field) >= 2 and field[:1] == b'"' and field[-1:] == b'"':
        return start + 1, len(field) - 2
    return start, len(field)


def fer_rows(lines: pd.DataFrame, csv_path: Path) -> SourceRows:
    """The scanned lines as a row table (see rows.py), plus the lines it cannot use, with reasons."""
    # FER2013 code -> AffectNet code, matched by name; anything else (text, 7, 2.5) -> -1.
    to_affectnet = dict(enumerate(fer2013_to_affectnet()))
    expression = pd.to_numeric(lines["emotion"], errors="coerce").map(to_affectnet).fillna(-1)
    rows = pd.DataFrame({
        "row_id": [f"{csv_path.name}:{n}" for n in lines["line"]],
        "path": str(csv_path),
        "x": np.nan, "y": np.nan, "w": np.nan, "h": np.nan,  # no box: the whole 48x48 image is the face
        "landmarks": "",
        "expression": expression.to_numpy(),
        "valence": NOT_ANNOTATED,
        "arousal": NOT_ANNOTATED,
        "split": lines["usage"].map(USAGE_SPLITS),
        "pixels_offset": lines["pixels_offset"].astype(np.int64),
        "pixels_length": lines["pixels_length"].astype(np.int64),
    })
    skipped: list[pd.DataFrame] = []
    rows = split_off(rows, (rows["pixels_offset"] < 0).to_numpy(), "bad_row", skipped)
    rows = split_off(rows, (rows["expression"] < 0).to_numpy(), "bad_expression", skipped)
    rows = split_off(rows, rows["split"].isna().to_numpy(), "unknown_usage", skipped)
    return SourceRows(compact(rows.reset_index(drop=True)), concat_skipped(skipped))
