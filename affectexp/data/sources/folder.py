"""Class-per-folder trees: `<root>/<split>/<class>/*.jpg` or `<root>/<class>/*.jpg`.

The tree may be wrapped in the folder of an archive (`<root>/AffectNet/train/...`) and a split
folder nested in itself (`train/train/happy/`); split and class names are matched in any case.

Class folders are matched to expressions by name ('angry' -> anger), never by position:
folders sort alphabetically, which is not AffectNet's code order. Every file under the root
ends up either as a row or in the skipped report (unknown class folder, file outside any
class folder, not an image), so nothing is lost silently. Faces are taken as already cropped:
the whole image is the face.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pandas as pd

from affectexp.data.affectnet_layout import NOT_ANNOTATED
from affectexp.data.labels import expression_code_of_name
from affectexp.data.sources.discovery import MAX_DEPTH, at, listing, name_key, shown
from affectexp.data.sources.rows import SourceError, SourceRows, check_root, compact, concat_skipped, split_off

log = logging.getLogger(__name__)

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
        root: the folder the tree was unpacked into.
        tree: the folder holding the split (or class) folders, relative to root or absolute;
            None: root, or the folder an archive wrapped them in (see archive_folder).

    After read(), `resolved` holds the tree folder used, as the `tree` value that names it.
    """

    def __init__(self, name: str, root: str, tree: str | None = None):
        self.name = name
        self.root = Path(root)
        self.tree = tree
        self.resolved: dict = {}
        self.unrecorded: tuple[str, ...] = ()

    def prepare(self) -> None:
        """Nothing to do: the tree is read where it lies."""

    def read(self, landmarks: bool = False) -> SourceRows:
        """One row per image file in a known class folder; raises SourceError for an unusable
        root. Folder trees have no landmarks: `landmarks` changes nothing."""
        check_root(self.root)
        tree = archive_folder(self.root) if self.tree is None else at(self.root, self.tree)
        if not tree.is_dir():
            raise SourceError(f"dataset.tree={self.tree}: {tree} is not a folder (write a path relative to "
                              "dataset.root, or an absolute one)")
        parts = split_folders(tree) or [(tree, "train")]
        self.resolved = {"tree": shown(self.root, tree)}
        log.info("Class-per-folder tree %s (dataset.tree=%s): %s", tree, self.resolved["tree"],
                 ", ".join(f"{split} from {shown(self.root, folder)}" for folder, split in parts))
        files = pd.DataFrame(list_files(self.root, parts), columns=["relative", "split", "folder"])
        if files.empty:
            raise SourceError(f"dataset.root: {self.root} holds no files; expected <root>/<split>/<class>/*.jpg "
                              "or <root>/<class>/*.jpg")
        if (files["folder"].map(expression_code_of_name) < 0).all():
            holding = sorted({os.path.dirname(relative) or "." for relative in files["relative"]})
            raise SourceError(f"dataset.root={self.root}: no class folder found in {shown(self.root, tree)}: looked "
                              "for <split>/<class>/ or <class>/ folders named by expression (e.g. happy, angry); "
                              f"folders with files: {listing(holding)}; set dataset.tree=<the folder holding the "
                              "split or class folders> (relative to dataset.root, or absolute)")
        return folder_rows(files, self.root)


def _subfolders(folder: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir() and not entry.name.startswith("."))


def _holds_images(folder: Path) -> bool:
    with os.scandir(folder) as entries:  # closed even when the first image ends the scan
        return any(entry.is_file() and os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES for entry in entries)


def archive_folder(root: Path) -> Path:
    """`root`, or the folder an archive wrapped the tree in (root/AffectNet/, root/archive/
    dataset/): followed while a folder holds no image and exactly one subfolder, named
    neither as a split nor as an expression, down to MAX_DEPTH levels."""
    folder = root
    for _ in range(MAX_DEPTH):
        inner = _subfolders(folder)
        if len(inner) != 1 or _holds_images(folder) or _names_split_or_class(inner[0]):
            break
        folder = folder / inner[0]
    return folder


def _names_split_or_class(name: str) -> bool:
    return name.lower() in SPLIT_FOLDERS or expression_code_of_name(name) >= 0


def split_folders(tree: Path) -> list[tuple[Path, str]]:
    """(folder, split) of each split folder of <tree>/<split>/<class>/, [] for <tree>/<class>/;
    SourceError when mixed. A split folder holding nothing but a folder of its own name
    (train/train/, as archives nest it) stands for that folder."""
    names = _subfolders(tree)
    splits = [n for n in names if n.lower() in SPLIT_FOLDERS]
    if splits and len(splits) != len(names):
        others = [n for n in names if n.lower() not in SPLIT_FOLDERS]
        raise SourceError(f"dataset.root: {tree} mixes split folders {splits} with other folders {others}; "
                          "expected <root>/<split>/<class>/*.jpg or <root>/<class>/*.jpg")
    return [(_unnested(tree / n), SPLIT_FOLDERS[n.lower()]) for n in splits]


def _unnested(folder: Path) -> Path:
    for _ in range(MAX_DEPTH):
        inner = _subfolders(folder)
        if len(inner) != 1 or name_key(inner[0]) != name_key(folder.name) or _holds_images(folder):
            break
        folder = folder / inner[0]
    return folder


def list_files(root: Path, parts: list[tuple[Path, str]]):
    """(path relative to root, split, class folder name or "" outside one) of every
    non-hidden file under each (folder, split) of `parts`, in sorted order."""
    for top, split in parts:
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # walk in sorted order
            for filename in sorted(f for f in filenames if not f.startswith(".")):
                path = os.path.join(dirpath, filename)
                classes = Path(os.path.relpath(path, top)).parts[:-1]
                yield os.path.relpath(path, root), split, classes[0] if classes else ""


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
