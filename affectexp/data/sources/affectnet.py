"""AffectNet as distributed: file lists (CSV) plus image folders under one root."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from affectexp.data import affectnet_layout as layout
from affectexp.data.labels import AFFECTNET_EXPRESSIONS, NON_EXPRESSION_CODES
from affectexp.data.sources.rows import SourceError, SourceRows, concat_skipped, inside_root, split_off

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

    def read(self) -> SourceRows:
        """Read and check every list; raises SourceError before any image is opened."""
        if not self.root.is_dir():
            raise SourceError(f"dataset.root: {self.root} does not exist or is not a folder")
        tables, skipped = [], []
        for annotation_set in self.sets:
            for lists_dir, csv_name, images_dir, split in ANNOTATION_SETS[annotation_set]:
                frame = read_annotation_list(self.root / lists_dir / csv_name)
                rows, dropped = annotation_rows(frame, csv_name, self.root / images_dir, split)
                tables.append(rows)
                skipped.extend(dropped)
        return SourceRows(pd.concat(tables, ignore_index=True), concat_skipped(skipped))


def read_annotation_list(csv_path: Path) -> pd.DataFrame:
    """One AffectNet CSV as strings, with or without its header line (both exist in the wild).

    Raises SourceError naming the file and the expected vs found columns when it is not one.
    """
    if not csv_path.is_file():
        raise SourceError(f"{csv_path}: file not found (expected AffectNet's annotation list here)")
    with open(csv_path, encoding="utf-8-sig", newline="") as handle:
        first_line = handle.readline().strip()
    if not first_line:
        raise SourceError(f"{csv_path}: empty file; expected columns {','.join(layout.CSV_COLUMNS)}")
    found = [field.strip() for field in first_line.split(",")]
    expected = list(layout.CSV_COLUMNS)
    if set(expected) <= set(found):
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False, encoding="utf-8-sig", skipinitialspace=True)
        frame.columns = [c.strip() for c in frame.columns]
        frame.attrs["first_data_line"] = 2
        return frame
    if len(found) == len(expected) and _looks_like_data(found):
        frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False, header=None, names=expected)
        frame.attrs["first_data_line"] = 1
        return frame
    raise SourceError(f"{csv_path}: expected columns {','.join(expected)}; found {','.join(found)}")


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


def annotation_rows(frame: pd.DataFrame, csv_name: str, images_dir: Path, split: str) -> tuple[pd.DataFrame, list]:
    """An AffectNet list as a row table (see rows.py) plus the rows it cannot use, with reasons."""
    first_line = frame.attrs.get("first_data_line", 2)
    relative = frame["subDirectory_filePath"].astype(str).str.strip()
    rows = pd.DataFrame(
        {
            "row_id": [f"{csv_name}:{first_line + i}" for i in range(len(frame))],
            "path": (str(images_dir) + os.sep) + relative,
            "x": _numbers(frame["face_x"]),
            "y": _numbers(frame["face_y"]),
            "w": _numbers(frame["face_width"]),
            "h": _numbers(frame["face_height"]),
            "landmarks": frame["facial_landmarks"].astype(str),
            "expression": _numbers(frame["expression"]),
            "valence": _numbers(frame["valence"]).fillna(layout.NOT_ANNOTATED),
            "arousal": _numbers(frame["arousal"]).fillna(layout.NOT_ANNOTATED),
            "split": split,
        }
    )
    skipped: list[pd.DataFrame] = []
    rows = split_off(rows, ~inside_root(str(images_dir), relative).values, "outside_root", skipped)
    code = rows["expression"]
    valid_code = code.notna() & (code == code.round()) & code.between(0, len(AFFECTNET_EXPRESSIONS) - 1)
    rows = split_off(rows, ~valid_code.values, "bad_expression", skipped)
    rows = split_off(rows, rows["expression"].isin(NON_EXPRESSION_CODES).values, "non_expression", skipped)
    box = rows[["x", "y", "w", "h"]]
    bad_box = box.isna().any(axis=1) | (rows["w"] <= 0) | (rows["h"] <= 0)
    rows = split_off(rows, bad_box.values, "bad_box", skipped)
    rows = rows.astype({"expression": np.int16})
    return rows.reset_index(drop=True), skipped


def _numbers(column: pd.Series) -> pd.Series:
    """Strings to floats; 'NULL', blanks and garbage become NaN."""
    return pd.to_numeric(column.astype(str).str.strip(), errors="coerce")
