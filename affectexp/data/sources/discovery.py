"""Finding a data set's folders and files under the root a user gives, as archives leave them.

Names are compared through name_key(), so that case, spaces vs underscores, a plural "s" and
the "_extracted" suffix of an unpacking tool do not matter: `Automatically annotated file
list`, `automatically_annotated_file_lists` and `Automatically_Annotated_file_lists_extracted`
are one name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

# How far below the root folders are looked at: deep enough for an images folder unpacked
# inside a folder of its own name inside an "_extracted" folder
# (Manually_Annotated_extracted/Manually_Annotated/Manually_Annotated_Images/Manually_Annotated_Images).
MAX_DEPTH = 4


def name_key(name: str) -> tuple[str, ...]:
    """A file or folder name as discovery compares it: its lower-case words, each without a
    plural "s", and without a trailing "extracted"."""
    words = [word for word in re.split(r"[^0-9a-z]+", name.lower()) if word]
    if len(words) > 1 and words[-1] == "extracted":
        words = words[:-1]
    return tuple(word[:-1] if len(word) > 3 and word.endswith("s") else word for word in words)


def file_key(name: str) -> tuple[tuple[str, ...], str]:
    """(name_key of the stem, lower-case suffix): `Training.CSV` is `training.csv`."""
    stem, suffix = os.path.splitext(name)
    return name_key(stem), suffix.lower()


@dataclass
class Tree:
    """What walk() saw: every folder it looked into (the root first, then in sorted walk order)
    and the names of the files in each."""

    root: Path
    folders: list[Path] = field(default_factory=list)
    files: dict[Path, list[str]] = field(default_factory=dict)


def walk(root: Path, max_depth: int = MAX_DEPTH) -> Tree:
    """The folders under `root` down to `max_depth` levels, with their files.

    Hidden folders are not entered, nor folders named by digits only: those are AffectNet's
    image subfolders (`<images>/459/<hash>.jpg`), and entering them would list every image of
    the data set (a million files) to find a few lists. Links to folders are followed, as a
    user who links an images folder into the root expects.
    """
    tree = Tree(root)
    pending = [(root, 0)]
    while pending:
        folder, depth = pending.pop()
        try:
            with os.scandir(folder) as listed:
                entries = sorted(listed, key=lambda entry: entry.name)
        except OSError:  # unreadable or vanished: nothing of the data set can be there
            continue
        tree.folders.append(folder)
        tree.files[folder] = [entry.name for entry in entries if _is_file(entry)]
        if depth < max_depth:
            below = [Path(entry.path) for entry in entries if _is_dir(entry)
                     and not entry.name.startswith(".") and not entry.name.isdigit()]
            pending.extend((child, depth + 1) for child in reversed(below))  # popped in sorted order
    return tree


def _is_file(entry: os.DirEntry) -> bool:
    try:
        return entry.is_file()
    except OSError:
        return False


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def inside(root: Path, path: Path) -> bool:
    """True where `path` is `root` or lies under it (lexically, as the rows' paths are checked)."""
    root_text = os.path.normpath(os.path.abspath(root))
    path_text = os.path.normpath(os.path.abspath(path))
    return path_text == root_text or path_text.startswith(root_text + os.sep)


def shown(root: Path, path: Path) -> str:
    """`path` as a user writes it in the config: relative to `root` when inside it ("." for the
    root itself), else absolute."""
    if inside(root, path):
        return os.path.relpath(os.path.abspath(path), os.path.abspath(root))
    return os.path.abspath(path)


def at(root: Path, written: str) -> Path:
    """The path a config value names: relative to `root`, or absolute."""
    return root / Path(written).expanduser()


def listing(items: list[str], most: int = 8) -> str:
    """Items for a one-line message: "a, b, c", "none", or the first `most` and "(+N more)"."""
    if not items:
        return "none"
    more = f" (+{len(items) - most} more)" if len(items) > most else ""
    return ", ".join(items[:most]) + more
