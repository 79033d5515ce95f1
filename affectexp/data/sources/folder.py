"""Class-per-folder trees: `<root>/<split>/<class>/*.jpg` or `<root>/<class>/*.jpg`.

Class folders are matched to expressions by name ('angry' -> anger), never by position:
folders sort alphabetically, which is not AffectNet's code order. Every file under the root
ends up either as a row or in the skipped report (unknown class folder, file outside any
class folder, not an image), so nothing is lost silently. Faces are taken as already cropped:
the whole image is the face.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from affectexp.data.affectnet_layout import NOT_ANNOTATED
from affectexp.data.labels import expression_code_of_name
from affectexp.data.sources.rows import SourceError, SourceRows, check_root, compact, concat_skipped, split_off

# Suffixes of files cv2 decodes, compared case-insensitively (.JPG is as common as .jpg).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".jpe", ".png", ".bmp", ".webp", ".tif", ".tiff", ".pgm", ".ppm"})
# Split folder names found in re-distributions -> this project's split names.
SPLIT_FOLDERS = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val", "publictest": "val",
    "test": "test", "testing": "test", "privatetest": "test",
}


class FolderSource:
    """Reads a class-per-folder tree; without split folders every face is a training face.

    Args:
        name: the data set's name (used in cache file names).
        root: the tree's top folder.
    """

    def __init__(self, name: str, root: str):
        self.name = name
        self.root = Path(root)
        self.resolved: dict = {}

    def prepare(self) -> None:
        """Nothing to do: the tree is read where it lies."""

    def read(self, landmarks: bool = False) -> SourceRows:
        """One row per image file in a known class folder; raises SourceError for an unusable
        root. Folder trees have no landmarks: `landmarks` changes nothing."""
        check_root(self.root)
        files = pd.DataFrame(list_files(self.root, split_layout(self.root)), columns=["relative", "split", "folder"])
        if files.empty:
            raise SourceError(f"dataset.root: {self.root} holds no files; expected <root>/<split>/<class>/*.jpg "
                              "or <root>/<class>/*.jpg")
        return folder_rows(files, self.root)


def _subfolders(folder: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))


def split_layout(root: Path) -> bool:
    """True for <root>/<split>/<class>/, False for <root>/<class>/; SourceError when mixed."""
    names = _subfolders(root)
    splits = [n for n in names if n.lower() in SPLIT_FOLDERS]
    if splits and len(splits) != len(names):
        others = [n for n in names if n.lower() not in SPLIT_FOLDERS]
        raise SourceError(f"dataset.root: {root} mixes split folders {splits} with other folders {others}; "
                          "expected <root>/<split>/<class>/*.jpg or <root>/<class>/*.jpg")
    return bool(splits)


def list_files(root: Path, by_split: bool):
    """(path relative to root, split, class folder name or "" outside one) of every
    non-hidden file under root, in sorted order."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # walk in sorted order
        for filename in sorted(f for f in filenames if not f.startswith(".")):
            relative = os.path.relpath(os.path.join(dirpath, filename), root)
            folders = Path(relative).parts[:-1]
            split = SPLIT_FOLDERS[folders[0].lower()] if by_split and folders else "train"
            classes = folders[1:] if by_split else folders
            yield relative, split, classes[0] if classes else ""


def folder_rows(files: pd.DataFrame, root: Path) -> SourceRows:
    """The listed files as a row table (see rows.py), plus the files it cannot use, with reasons."""
    codes = {name: expression_code_of_name(name) for name in files["folder"].unique()}
    rows = pd.DataFrame({
        "row_id": files["relative"],
        "path": (str(root) + os.sep) + files["relative"],
        "x": np.nan, "y": np.nan, "w": np.nan, "h": np.nan,  # no box: the image is the face
        "landmarks": "",
        "expression": files["folder"].map(codes).astype(np.int16),
        "valence": NOT_ANNOTATED,
        "arousal": NOT_ANNOTATED,
        "split": files["split"],
    })
    suffixes = files["relative"].map(lambda p: os.path.splitext(p)[1].lower())
    skipped: list[pd.DataFrame] = []
    rows = split_off(rows, (~suffixes.isin(IMAGE_SUFFIXES)).to_numpy(), "not_an_image", skipped)
    rows = split_off(rows, (files.loc[rows.index, "folder"] == "").to_numpy(), "no_class_folder", skipped)
    rows = split_off(rows, (rows["expression"] < 0).to_numpy(), "unknown_class", skipped)
    return SourceRows(compact(rows.reset_index(drop=True)), concat_skipped(skipped))
