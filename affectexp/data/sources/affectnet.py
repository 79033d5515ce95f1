"""AffectNet as distributed: file lists (CSV) plus image folders under one root."""

from __future__ import annotations

import csv
import itertools
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import pandas as pd

from affectexp.data import affectnet_layout as layout
from affectexp.data.labels import AFFECTNET_EXPRESSIONS, NON_EXPRESSION_CODES
from affectexp.data.sources.rows import (
    SourceError,
    SourceRows,
    check_root,
    compact,
    concat_skipped,
    inside_root,
    split_off,
)

log = logging.getLogger(__name__)

# (list folder, CSV name, images folder, split the rows belong to) of each annotated set.
ANNOTATION_SETS: dict[str, list[tuple[str, str, str, str]]] = {
    "manual": [
        (layout.MANUAL_LISTS_DIR, layout.TRAINING_CSV, layout.MANUAL_IMAGES_DIR, "train"),
        # AffectNet's test labels are not public: its validation list is everyone's test split.
        (layout.MANUAL_LISTS_DIR, layout.VALIDATION_CSV, layout.MANUAL_IMAGES_DIR, "test"),
    ],
    "automatic": [
        (layout.AUTOMATIC_LISTS_DIR, layout.AUTOMATIC_CSV, layout.AUTOMATIC_IMAGES_DIR, "train"),
    ],
}


class AffectNetSource:
    """Reads AffectNet's manual and/or automatic annotation lists.

    Args:
        name: the data set's name (used in cache file names).
        root: the folder holding Manually_Annotated_file_lists/ and Manually_Annotated_Images/.
        sets: which annotated sets to read: "manual", "automatic" or both.
    """

    def __init__(self, name: str, root: str, sets: Sequence[str] = ("manual",)):
        unknown = [s for s in sets if s not in ANNOTATION_SETS]
        if unknown:
            raise SourceError(f"dataset.sets: unknown set(s) {unknown}; choose from {list(ANNOTATION_SETS)}")
        self.name = name
        self.root = Path(root)
        self.sets = list(sets)

    def prepare(self) -> None:
        """Nothing to do: AffectNet is read where it lies."""

    def read(self, landmarks: bool = False) -> SourceRows:
        """Read and check every list; raises SourceError before any image is opened.

        landmarks: fill the landmarks column (about 1 KB of text per row, so only when the
        faces are aligned); otherwise it is "".
        """
        check_root(self.root)
        lists = [(self.root / lists_dir / csv_name, self.root / images_dir, split)
                 for annotation_set in self.sets
                 for lists_dir, csv_name, images_dir, split in ANNOTATION_SETS[annotation_set]]
        layouts = [list_layout(csv_path) for csv_path, _, _ in lists]  # every list checked before any is parsed
        tables, skipped = [], []
        for (csv_path, images_dir, split), columns in zip(lists, layouts):
            for frame in read_annotation_list(csv_path, columns, landmarks):
                rows, dropped = annotation_rows(frame, csv_path.name, images_dir, self.root, split)
                tables.append(rows)
                skipped.extend(dropped)
        return SourceRows(pd.concat(tables, ignore_index=True), concat_skipped(skipped))


# CSV records parsed at once: a chunk's rows are held as Python strings until they become a
# frame, so reading a 500k-line list whole would make peak memory grow with the list.
CHUNK_LINES = 5_000


def _records(handle) -> Iterator[tuple[int, list[str]]]:
    """(line number where the record ends, its fields) of every non-blank CSV record.

    The csv module, not a split on commas: quoted fields (a header in quotes included) and
    CRLF line endings are read as CSV says; the caller opens the file as utf-8-sig, which
    drops a byte-order mark.
    """
    reader = csv.reader(handle, skipinitialspace=True)
    for fields in reader:
        if fields:  # csv yields [] for a blank line
            yield reader.line_num, fields


def list_layout(csv_path: Path) -> list[str] | None:
    """The stripped header names of one AffectNet CSV, or None when it has no header line
    (both exist in the wild). Raises SourceError naming the file and the expected vs found
    columns when it is not an AffectNet list."""
    if not csv_path.is_file():
        raise SourceError(f"{csv_path}: file not found (expected AffectNet's annotation list here)")
    with open(csv_path, encoding="utf-8-sig", newline="") as handle:
        _, found = next(_records(handle), (0, []))
    found = [field.strip() for field in found]
    if not found:
        raise SourceError(f"{csv_path}: empty file; expected columns {','.join(layout.CSV_COLUMNS)}")
    expected = list(layout.CSV_COLUMNS)
    if set(expected) <= set(found):
        return found
    if len(found) == len(expected) and _looks_like_data(found):
        return None
    raise SourceError(f"{csv_path}: expected columns {','.join(expected)}; found {','.join(found)}")


def read_annotation_list(csv_path: Path, header: list[str] | None, landmarks: bool) -> Iterator[pd.DataFrame]:
    """One frame of strings per chunk of CHUNK_LINES records, with the columns CSV_COLUMNS
    (facial_landmarks only when asked for), `line` (the record's line number in the file) and
    `fields_ok` (False where the record has more or fewer fields than the header: its other
    columns are then ""); `header` as list_layout() found it."""
    names = header if header is not None else list(layout.CSV_COLUMNS)
    wanted = [c for c in layout.CSV_COLUMNS if landmarks or c != "facial_landmarks"]
    positions = [names.index(c) for c in wanted]
    with open(csv_path, encoding="utf-8-sig", newline="") as handle:
        records = _records(handle)
        if header is not None:
            next(records)
        while True:
            chunk = list(itertools.islice(records, CHUNK_LINES))
            if not chunk:
                return
            fields_ok = [len(fields) == len(names) for _, fields in chunk]
            frame = pd.DataFrame(
                [[fields[i] for i in positions] if ok else [""] * len(positions)
                 for (_, fields), ok in zip(chunk, fields_ok)],
                columns=wanted, dtype=str,
            )
            yield frame.assign(line=[line for line, _ in chunk], fields_ok=fields_ok)


def _looks_like_data(fields: list[str]) -> bool:
    """A header-less first line: a path, then the box coordinates (numbers or NULL)."""
    def numeric_or_null(text: str) -> bool:
        try:
            float(text)
            return True
        except ValueError:
            return text.upper() == "NULL"

    looks_like_path = "/" in fields[0] or "." in fields[0]
    return looks_like_path and all(numeric_or_null(f) for f in fields[1:5])


def annotation_rows(frame: pd.DataFrame, csv_name: str, images_dir: Path, boundary: Path,
                    split: str) -> tuple[pd.DataFrame, list]:
    """Part of an AffectNet list (a frame of read_annotation_list) as a row table (see rows.py),
    plus the rows it cannot use, with reasons.

    A `subDirectory_filePath` is relative to `images_dir`, or absolute; either way the file
    must lie inside `boundary` (the data set's folder), else the row is `outside_root`.
    """
    named = frame["subDirectory_filePath"].astype(str).str.strip()
    absolute = named.str.startswith(os.sep)
    paths = named.where(absolute, (str(images_dir) + os.sep) + named)
    rows = pd.DataFrame(
        {
            "row_id": csv_name + ":" + frame["line"].astype(str),
            "path": paths,
            "x": _numbers(frame["face_x"]),
            "y": _numbers(frame["face_y"]),
            "w": _numbers(frame["face_width"]),
            "h": _numbers(frame["face_height"]),
            "landmarks": frame["facial_landmarks"].astype(str) if "facial_landmarks" in frame else "",
            "expression": _numbers(frame["expression"]),
            "valence": _numbers(frame["valence"]).fillna(layout.NOT_ANNOTATED),
            "arousal": _numbers(frame["arousal"]).fillna(layout.NOT_ANNOTATED),
            "split": split,
        }
    )
    skipped: list[pd.DataFrame] = []
    # First, so that a short row is reported as what it is, not as its first empty field.
    rows = split_off(rows, ~frame["fields_ok"].to_numpy(), "malformed_row", skipped)
    rows = split_off(rows, ~inside_root(str(boundary), rows["path"]).to_numpy(), "outside_root", skipped)
    code = rows["expression"]
    valid_code = code.notna() & (code == code.round()) & code.between(0, len(AFFECTNET_EXPRESSIONS) - 1)
    rows = split_off(rows, ~valid_code.values, "bad_expression", skipped)
    rows = split_off(rows, rows["expression"].isin(NON_EXPRESSION_CODES).values, "non_expression", skipped)
    box = rows[["x", "y", "w", "h"]]
    bad_box = box.isna().any(axis=1) | (rows["w"] <= 0) | (rows["h"] <= 0)
    rows = split_off(rows, bad_box.values, "bad_box", skipped)
    return compact(rows.reset_index(drop=True)), skipped


def _numbers(column: pd.Series) -> pd.Series:
    """Strings to floats; 'NULL', blanks and garbage become NaN."""
    return pd.to_numeric(column.astype(str).str.strip(), errors="coerce")
