"""AffectNet as users have it on disk: file lists (CSV) plus image folders under one root."""

from __future__ import annotations

import csv
import itertools
import logging
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from affectexp.data import affectnet_layout as layout
from affectexp.data.labels import AFFECTNET_EXPRESSIONS, NON_EXPRESSION_CODES
from affectexp.data.sources.discovery import MAX_DEPTH, Tree, at, file_key, inside, listing, name_key, shown, walk
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


@dataclass(frozen=True)
class AnnotationSet:
    """One of AffectNet's annotated sets: its lists, as (CSV name, split its rows belong to),
    and the names of its folders in the distribution (used in messages; discovery finds the
    folders under whatever name they have)."""

    lists: tuple[tuple[str, str], ...]
    lists_dir: str
    images_dir: str


ANNOTATION_SETS: dict[str, AnnotationSet] = {
    # AffectNet's test labels are not public: its validation list is everyone's test split.
    "manual": AnnotationSet(((layout.TRAINING_CSV, "train"), (layout.VALIDATION_CSV, "test")),
                            layout.MANUAL_LISTS_DIR, layout.MANUAL_IMAGES_DIR),
    "automatic": AnnotationSet(((layout.AUTOMATIC_CSV, "train"),), layout.AUTOMATIC_LISTS_DIR,
                               layout.AUTOMATIC_IMAGES_DIR),
}


@dataclass(frozen=True)
class SetLayout:
    """Where one annotated set lies: the folder of its lists, each list's file (CSV name ->
    the file as it is named on disk) and header (as list_layout() found it), and the folder
    its lists' relative paths start from."""

    lists: Path
    files: dict[str, Path]
    headers: dict[str, list[str] | None]
    images: Path


class AffectNetSource:
    """Reads AffectNet's manual and/or automatic annotation lists, wherever under `root` the
    archives left them (see locate_set).

    Args:
        name: the data set's name (used in cache file names).
        root: the folder the data set was unpacked into.
        sets: which annotated sets to read: "manual", "automatic" or both.
        lists: per set, the folder holding its lists (relative to root, or absolute); a set
            missing or None here is found under root.
        images: per set, the folder its lists' `subDirectory_filePath` values start from; a
            set missing or None here is found under root.

    After read(), `resolved` holds the lists and images folders used, as the `lists` and
    `images` values that name them.
    """

    def __init__(self, name: str, root: str, sets: Sequence[str] = ("manual",),
                 lists: Mapping[str, str | None] | None = None, images: Mapping[str, str | None] | None = None):
        unknown = [s for s in sets if s not in ANNOTATION_SETS]
        if unknown:
            raise SourceError(f"dataset.sets: unknown set(s) {unknown}; choose from {list(ANNOTATION_SETS)}")
        self.name = name
        self.root = Path(root)
        self.sets = list(sets)
        self.lists = _per_set("dataset.lists", lists)
        self.images = _per_set("dataset.images", images)
        self.resolved: dict = {}
        self.unrecorded: tuple[str, ...] = ()

    def prepare(self) -> None:
        """Nothing to do: AffectNet is read where it lies."""

    def read(self, landmarks: bool = False) -> SourceRows:
        """Find and check every list; raises SourceError before any image is opened.

        landmarks: fill the landmarks column (about 1 KB of text per row, so only when the
        faces are aligned); otherwise it is "".
        """
        check_root(self.root)
        tables, skipped = [], []
        for set_name, found in self.locate().items():
            # A path a list names must stay inside the data set: the root, or the images
            # folder where dataset.images puts it elsewhere.
            boundary = self.root if inside(self.root, found.images) else found.images
            for csv_name, split in ANNOTATION_SETS[set_name].lists:
                for frame in read_annotation_list(found.files[csv_name], found.headers[csv_name], landmarks):
                    rows, dropped = annotation_rows(frame, csv_name, found.images, boundary, split)
                    tables.append(rows)
                    skipped.extend(dropped)
        return SourceRows(pd.concat(tables, ignore_index=True), concat_skipped(skipped))

    def locate(self) -> dict[str, SetLayout]:
        """Every set's lists and images (see locate_set), all found and checked before any list
        is parsed; logged, and kept in `resolved`."""
        everything_given = all(self.lists[s] is not None and self.images[s] is not None for s in self.sets)
        tree = None if everything_given else walk(self.root)
        where = {s: locate_set(self.root, tree, s, self.lists[s], self.images[s]) for s in self.sets}
        self.resolved = {key: {s: shown(self.root, getattr(found, key)) for s, found in where.items()}
                         for key in ("lists", "images")}
        for s, found in where.items():
            log.info("AffectNet %s set: lists %s, images %s (dataset.lists.%s=%s dataset.images.%s=%s)",
                     s, ", ".join(str(path) for path in found.files.values()), found.images,
                     s, self.resolved["lists"][s], s, self.resolved["images"][s])
        return where


def _per_set(key: str, given: Mapping[str, str | None] | None) -> dict[str, str | None]:
    """A per-set config value (dataset.lists, dataset.images) with every set present."""
    given = dict(given or {})
    unknown = [s for s in given if s not in ANNOTATION_SETS]
    if unknown:
        raise SourceError(f"{key}: unknown set(s) {unknown}; choose from {list(ANNOTATION_SETS)}")
    return {s: given.get(s) for s in ANNOTATION_SETS}


# CSV records parsed at once: a chunk's rows are held as Python strings until they become a
# frame, so reading a 500k-line list whole would make peak memory grow with the list.
CHUNK_LINES = 5_000


def _open_list(csv_path: Path):
    """An AffectNet list as text: UTF-8, a byte-order mark dropped; a byte that is not UTF-8 is
    kept as a lone surrogate (surrogateescape), so that its record can be reported (_is_text)
    instead of stopping the whole list."""
    return open(csv_path, encoding="utf-8-sig", errors="surrogateescape", newline="")


def _is_text(fields: list[str]) -> bool:
    """False for a record holding bytes that are not UTF-8 (kept by _open_list as surrogates) or
    control characters: another encoding, or not text at all."""
    return not any(NOT_TEXT.search(field) for field in fields)


NOT_TEXT = re.compile("[\x00-\x08\x0b-\x1f\x7f\udc80-\udcff]")


def _records(handle) -> Iterator[tuple[int, list[str]]]:
    """(line number where the record ends, its fields) of every non-blank CSV record.

    The csv module, not a split on commas: quoted fields (a header in quotes included) and
    CRLF line endings are read as CSV says; the caller opens the file with _open_list.
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
    with _open_list(csv_path) as handle:
        line, found = next(_records(handle), (0, []))
    if not _is_text(found):
        raise SourceError(f"{csv_path}: line {line} is not UTF-8 text (a binary file, or another encoding); "
                          "save the list as UTF-8, as AffectNet's lists are")
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
    columns are then "") and `text_ok` (False where it holds bytes that are not UTF-8 text: its
    fields_ok is False too); `header` as list_layout() found it."""
    names = header if header is not None else list(layout.CSV_COLUMNS)
    wanted = [c for c in layout.CSV_COLUMNS if landmarks or c != "facial_landmarks"]
    positions = [names.index(c) for c in wanted]
    with _open_list(csv_path) as handle:
        records = _records(handle)
        if header is not None:
            next(records)
        while True:
            chunk = list(itertools.islice(records, CHUNK_LINES))
            if not chunk:
                return
            text_ok = [_is_text(fields) for _, fields in chunk]
            fields_ok = [len(fields) == len(names) and text for (_, fields), text in zip(chunk, text_ok)]
            frame = pd.DataFrame(
                [[fields[i] for i in positions] if ok else [""] * len(positions)
                 for (_, fields), ok in zip(chunk, fields_ok)],
                columns=wanted, dtype=str,
            )
            yield frame.assign(line=[line for line, _ in chunk], fields_ok=fields_ok, text_ok=text_ok)


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


# Rows of each list whose files must be found in a folder for it to be the list's images
# folder: enough to tell the right folder from a wrong one (AffectNet's file names are
# hashes), few enough to check dozens of folders in milliseconds.
SAMPLE_ROWS = 50


def locate_set(root: Path, tree: Tree | None, set_name: str, lists_at: str | None,
               images_at: str | None) -> SetLayout:
    """Where one annotated set lies under `root`.

    Its lists are found by file name (any case, spaces or underscores) in any folder of
    `tree` (walk(root)) holding all of them, or in the folder `lists_at` names. Its images
    folder is the folder of `tree`, whatever its name, or the one `images_at` names, in which
    the first SAMPLE_ROWS relative paths of each list name existing files, so a wrong pairing
    cannot pass. Raises SourceError, in one line naming what was looked for, what was found
    and the config keys to set, unless exactly one (lists, images) pair fits.
    """
    names = [csv_name for csv_name, _ in ANNOTATION_SETS[set_name].lists]
    if lists_at is not None:
        folder = _given_folder(root, f"dataset.lists.{set_name}", lists_at)
        files = _lists_in(folder, sorted(entry.name for entry in os.scandir(folder) if entry.is_file()), names)
        if files is None:
            csvs = [entry.name for entry in os.scandir(folder) if entry.name.lower().endswith(".csv")]
            raise SourceError(f"dataset.lists.{set_name}={lists_at}: {folder} does not hold {', '.join(names)} "
                              f"(any case); CSV files there: {listing(sorted(csvs))}")
        candidates = [(folder, files)]
    else:
        candidates = [(folder, files) for folder in tree.folders
                      if (files := _lists_in(folder, tree.files[folder], names)) is not None]
    checked, refused = [], []
    for folder, files in candidates:
        try:
            checked.append((folder, files, {n: list_layout(path) for n, path in files.items()}))
        except SourceError as error:  # a CSV of the same name that is not an AffectNet list
            refused.append(error)
    if refused and not checked:
        raise refused[0]
    given = None if images_at is None else _given_folder(root, f"dataset.images.{set_name}", images_at)
    fits: list[SetLayout] = []
    found_in: dict[Path, tuple[int, int]] = {}  # folder -> the most (files found, files sampled)
    example = None
    for folder, files, headers in checked:
        samples = {n: sample_paths(path, headers[n]) for n, path in files.items()}
        if not any(samples.values()):
            # An empty list, or absolute paths only: the images folder changes no path.
            fits.append(SetLayout(folder, files, headers, given or folder))
            continue
        example = example or next(sample[0] for sample in samples.values() if sample)
        sampled = sum(len(sample) for sample in samples.values())
        for images in tree.folders if given is None else [given]:
            hits = {n: sum((images / path).is_file() for path in sample) for n, sample in samples.items()}
            found_in[images] = max(found_in.get(images, (0, sampled)), (sum(hits.values()), sampled))
            if all(hits[n] for n, sample in samples.items() if sample):
                fits.append(SetLayout(folder, files, headers, images))
    if len(fits) == 1:
        return fits[0]
    if fits:
        pairs = [f"lists {shown(root, fit.lists)} with images {shown(root, fit.images)}" for fit in fits]
        raise SourceError(f"dataset.root={root}: AffectNet's {set_name} set is ambiguous, its lists and the files "
                          f"they name are in more than one place: {listing(pairs)}; to choose, "
                          f"{_set_hint(set_name, names)}")
    looked_in = [given] if given is not None else tree.folders
    raise SourceError(_not_found(root, tree, set_name, names, [folder for folder, _ in candidates],
                                 {folder: found_in.get(folder) for folder in looked_in}, given is not None, example))


def _set_hint(set_name: str, names: list[str]) -> str:
    return (f"set dataset.lists.{set_name}=<the folder holding {', '.join(names)}> and dataset.images.{set_name}="
            f"<the folder holding the <subdir>/<file> paths they list> (relative to dataset.root, or absolute), "
            f"or leave {set_name} out of dataset.sets")


def _not_found(root: Path, tree: Tree | None, set_name: str, names: list[str], lists_found: list[Path],
               image_counts: dict[Path, tuple[int, int] | None], images_given: bool, example: str | None) -> str:
    """The one-line message for a set without a fitting (lists, images) pair: what was looked
    for, the lists found, the image folders worth naming (named like the set's, the one given,
    any holding some of the files) with how many sampled files each holds, and the keys to set."""
    family = name_key(ANNOTATION_SETS[set_name].images_dir)[:2]  # ("manually", "annotated")
    images = [shown(root, folder) + (f" ({counts[0]} of {counts[1]} files found)" if counts else "")
              for folder, counts in image_counts.items()
              if images_given or name_key(folder.name)[:2] == family or (counts and counts[0])]
    found = [f"lists in: {listing([shown(root, folder) for folder in lists_found])}",
             f"image folders: {listing(images)}"]
    if not lists_found and tree is not None:
        found.append("CSV files: " + listing([shown(root, folder / name) for folder in tree.folders
                                             for name in tree.files[folder] if name.lower().endswith(".csv")]))
    named = f" (e.g. {example})" if example else ""
    return (f"dataset.root={root}: AffectNet's {set_name} set not found: looked for {', '.join(names)} "
            f"(any case, up to {MAX_DEPTH} folders deep) and a folder holding the files named by their "
            f"first {SAMPLE_ROWS} rows{named}; found {'; '.join(found)}; {_set_hint(set_name, names)}")


def _given_folder(root: Path, key: str, written: str) -> Path:
    folder = at(root, written)
    if not folder.is_dir():
        raise SourceError(f"{key}={written}: {folder} is not a folder (write a path relative to dataset.root, "
                          "or an absolute one)")
    return folder


def _lists_in(folder: Path, file_names: list[str], names: list[str]) -> dict[str, Path] | None:
    """CSV name -> its file in `folder` (matched by file_key) when the folder holds every one
    of `names`, else None."""
    by_key = {}
    for file_name in file_names:
        by_key.setdefault(file_key(file_name), file_name)
    found = {name: by_key.get(file_key(name)) for name in names}
    return None if None in found.values() else {name: folder / file_name for name, file_name in found.items()}


def sample_paths(csv_path: Path, header: list[str] | None) -> list[str]:
    """The first SAMPLE_ROWS relative `subDirectory_filePath` values of a list (absolute
    paths do not depend on the images folder, so they cannot tell one from another)."""
    chunks = read_annotation_list(csv_path, header, landmarks=False)
    try:
        frame = next(chunks, None)
    finally:
        chunks.close()
    if frame is None:
        return []
    named = frame.loc[frame["fields_ok"], "subDirectory_filePath"].astype(str).str.strip()
    return [path for path in named if path and not path.startswith(os.sep)][:SAMPLE_ROWS]


def annotation_rows(frame: pd.DataFrame, csv_name: str, images_dir: Path, boundary: Path,
                    split: str) -> tuple[pd.DataFrame, list]:
    """Part of an AffectNet list (a frame of read_annotation_list) as a row table (see rows.py),
    plus the rows it cannot use, with reasons.

    A `subDirectory_filePath` is relative to `images_dir`, or absolute; either way the file
    must lie inside `boundary` (the data set's folder), else the row is `outside_root`.
    """
    named = frame["subDirectory_filePath"].astype(str).str.strip()
    absolute = named.str.startswith(os.sep)
    paths = named.where(absolute | (named == ""), (str(images_dir) + os.sep) + named)  # a blank one stays blank
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
    text_ok, fields_ok = frame["text_ok"].to_numpy(), frame["fields_ok"].to_numpy()
    rows = split_off(rows, ~text_ok, "not_text", skipped)
    rows = split_off(rows, ~fields_ok[text_ok], "malformed_row", skipped)
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
