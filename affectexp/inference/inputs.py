"""What predict.py reads: photos, folders of them (recursively), videos (every n-th frame) and
AffectNet-style annotation lists (faces at the list's boxes, no detector).

Photos and frames come out as RGB uint8 arrays; a file that cannot be read is reported as an
Unreadable item, never raised, so one bad file among thousands costs one line of the report.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from affectexp.data.affectnet_layout import (AUTOMATIC_IMAGES_DIR, AUTOMATIC_LISTS_DIR, MANUAL_IMAGES_DIR, MANUAL_LISTS_DIR,
                                          parse_landmarks)
from affectexp.data.faces import FaceError, FaceSpec, load_face, read_image_bytes
from affectexp.data.labels import AFFECTNET_EXPRESSIONS
from affectexp.data.sources.affectnet import annotation_rows, list_layout, read_annotation_list
from affectexp.errors import ConfigError, UserInputError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg"})


@dataclass(frozen=True)
class Frame:
    """A photo (frame 0) or a video's frame (its number, from 0), RGB uint8 (H, W, 3)."""

    source: str
    frame: int
    image: np.ndarray


@dataclass(frozen=True)
class Unreadable:
    """An input that gave no image: the file and why."""

    source: str
    reason: str


@dataclass(frozen=True)
class ListedFace:
    """A face of an annotation list, cut at the list's box as preprocessing cuts it."""

    source: str  # the image file
    row: str  # <list file name>:<line>
    box: tuple[float, float, float, float]
    face: np.ndarray
    true_class: str  # AffectNet's expression name of the row's code
    true_affect: tuple[float, float]  # the row's valence and arousal, NOT_ANNOTATED (-2) where it has none


def is_annotation_list(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() == ".csv"


# AffectNet's list folders and, beside each, the folder its lists' paths are relative to.
LIST_IMAGES_DIRS = {MANUAL_LISTS_DIR: MANUAL_IMAGES_DIR, AUTOMATIC_LISTS_DIR: AUTOMATIC_IMAGES_DIR}


def default_images_dir(csv_path: Path) -> Path:
    """The folder a list's paths are relative to when images_dir is not given: the images folder
    beside AffectNet's list folder (Manually_Annotated_file_lists/validation.csv ->
    Manually_Annotated_Images), else the list's own folder."""
    beside = LIST_IMAGES_DIRS.get(csv_path.parent.name)
    if beside and (csv_path.parent.parent / beside).is_dir():
        return csv_path.parent.parent / beside
    return csv_path.parent


def check_inputs(path: str | None) -> Path:
    """`inputs` as a path, after checking it names something (before any model is loaded)."""
    if path is None:
        raise ConfigError("inputs: no value given; pass inputs=<photo, video, folder or .csv list>")
    if not Path(path).exists():
        raise UserInputError(f"inputs: {path} does not exist; pass a photo, a video, a folder of them, or an "
                             "AffectNet-style .csv list")
    return Path(path)


def input_files(path: Path) -> list[Path]:
    """The photos and videos `path` (check_inputs) names: itself, or every one in its folder tree, sorted."""
    if path.is_dir():
        suffixes = IMAGE_SUFFIXES | VIDEO_SUFFIXES
        return sorted(p for p in path.rglob("*") if p.suffix.lower() in suffixes and p.is_file())
    return [path]


def frames(files: list[Path], every_n_frames: int) -> Iterator[Frame | Unreadable]:
    """Each photo's image, and every `every_n_frames`-th frame of each video."""
    for path in files:
        if path.suffix.lower() in VIDEO_SUFFIXES:
            yield from video_frames(path, every_n_frames)
        else:
            yield read_photo(path)


def read_photo(path: Path) -> Frame | Unreadable:
    try:
        data = read_image_bytes(str(path))
    except FaceError as error:
        return Unreadable(str(path), str(error))
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        return Unreadable(str(path), "unreadable_image: not an image cv2 can decode")
    return Frame(str(path), 0, cv2.cvtColor(image, cv2.COLOR_BGR2RGB))


def video_frames(path: Path, every_n_frames: int) -> Iterator[Frame | Unreadable]:
    """Frames 0, n, 2n, ... of a video; frames in between are skipped without being decoded."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            yield Unreadable(str(path), "unreadable_video: not a video cv2 can open")
            return
        number = 0
        while capture.grab():
            if number % every_n_frames == 0:
                ok, image = capture.retrieve()
                if ok:
                    yield Frame(str(path), number, cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
            number += 1
        if number == 0:
            yield Unreadable(str(path), "unreadable_video: no frame could be read")
    finally:
        capture.release()


def listed_faces(csv_path: Path, images_dir: Path, spec: FaceSpec) -> Iterator[ListedFace | Unreadable]:
    """The faces of an AffectNet-style list, each cut by load_face with the model's face spec:
    the same pixels the training cache holds for the same row. Paths in the list are relative
    to `images_dir` (or absolute, inside it)."""
    header = list_layout(csv_path)
    for chunk in read_annotation_list(csv_path, header, landmarks=spec.align):
        rows, skipped = annotation_rows(chunk, csv_path.name, images_dir, images_dir, split="predict")
        for part in skipped:
            for row_id, reason in zip(part["row_id"], part["reason"]):
                yield Unreadable(str(row_id), reason)
        for row in rows.itertuples(index=False):
            box = (float(row.x), float(row.y), float(row.w), float(row.h))
            landmarks = parse_landmarks(row.landmarks) if spec.align else None
            try:
                face = load_face(row.path, box, spec, landmarks)
            except FaceError as error:
                yield Unreadable(row.path, str(error))
                continue
            yield ListedFace(row.path, row.row_id, box, face, AFFECTNET_EXPRESSIONS[int(row.expression)],
                             (float(row.valence), float(row.arousal)))


def relative_source(source: str, root: Path) -> str:
    """A source path as the output names it: relative to the inputs' folder when inside it."""
    try:
        return os.path.relpath(source, root) if root.is_dir() else source
    except ValueError:
        return source
