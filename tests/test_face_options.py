"""The faces.* options, AffectNet's sets and the run options of preprocess.py, through run_preprocess
on a hand-made AffectNet copy whose photo's pixels say where each face was cut."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from affectexp.data import affectnet_layout as layout
from affectexp.data.cache import FaceCache
from affectexp.tasks.preprocess import run_preprocess
from affectexp.errors import UserInputError
from conftest import compose_config

SIZE = 16  # the cache's face size: every box below is 16 px once grown, so no resizing blurs it

# A smooth gradient, distinct at every pixel: a face's pixels tell where it was cut.
PHOTO = (2 * np.arange(64)[:, None] + np.arange(64)[None, :]).astype(np.uint8)

# (x, y, w, h) boxes, x the column; each a row of training.csv (expression 1, happy).
INSIDE = (10, 20, 16, 16)
SMALL = (14, 24, 8, 8)  # with faces.margin=0.5: INSIDE
WIDE = (10, 20, 16, 8)  # with faces.square=true: columns 10..25, rows 16..31
LEAVING = (56, 56, 16, 16)  # half of it beyond the right and bottom edges
BOXES = [INSIDE, SMALL, WIDE, LEAVING]


def level_landmarks() -> list[float]:
    """68 (x, y) points, eyes tilted by about 27 degrees: alignment turns such a face."""
    points = np.full((layout.NUM_LANDMARKS, 2), 30.0)
    points[layout.LEFT_EYE] = (20.0, 30.0)
    points[layout.RIGHT_EYE] = (40.0, 40.0)
    return points.ravel().tolist()


def csv_line(relative: str, box, landmarks: list[float] | None = None) -> str:
    marks = ";".join(f"{v:g}" for v in landmarks) if landmarks is not None else ""
    return ",".join([relative, *(str(v) for v in box), marks, "1", "0.5", "0.5"])


def write_affectnet(root: Path, landmarks: bool = False) -> Path:
    """The manual set (training.csv: BOXES; validation.csv: INSIDE) and an automatic set of
    two rows, all on PHOTO; with `landmarks`, the first two training rows carry tilted eyes."""
    header = ",".join(layout.CSV_COLUMNS)
    # Each set's photo under its own name, so each set's lists fit one images folder only.
    for lists, images, photo in [(layout.MANUAL_LISTS_DIR, layout.MANUAL_IMAGES_DIR, "photo.png"),
                                 (layout.AUTOMATIC_LISTS_DIR, layout.AUTOMATIC_IMAGES_DIR, "auto.png")]:
        (root / images / "1").mkdir(parents=True)
        cv2.imwrite(str(root / images / "1" / photo), PHOTO)
        (root / lists).mkdir(parents=True)
    marks = [level_landmarks() if landmarks and i < 2 else None for i in range(len(BOXES))]
    training = [csv_line("1/photo.png", box, m) for box, m in zip(BOXES, marks)]
    manual = root / layout.MANUAL_LISTS_DIR
    (manual / layout.TRAINING_CSV).write_text("\n".join([header, *training]) + "\n")
    (manual / layout.VALIDATION_CSV).write_text("\n".join([header, csv_line("1/photo.png", INSIDE)]) + "\n")
    automatic = [csv_line("1/auto.png", LEAVING), csv_line("1/auto.png", WIDE)]
    (root / layout.AUTOMATIC_LISTS_DIR / layout.AUTOMATIC_CSV).write_text("\n".join([header, *automatic]) + "\n")
    return root


def preprocess(tmp_path: Path, overrides: list[str], landmarks: bool = False, work: str = "work"):
    """(summary, {split: faces (n, SIZE, SIZE) uint8}, {split: source rows}) of one run."""
    root = tmp_path / "affectnet"
    if not root.exists():
        write_affectnet(root, landmarks)
    cfg = compose_config("preprocess", tmp_path / work, [
        "dataset=affectnet", f"dataset.root={root}", f"cache.size={SIZE}", "num_workers=0",
        "split.val_fraction=0", "faces.reduced_decoding=false", *overrides])
    summary = run_preprocess(cfg)
    with FaceCache(cfg.cache.path) as cache:
        faces = {split: cache.read_faces(split, 0, cache.split_size(split))[..., 0] for split in cache.split_ranges}
        sources = {split: cache.file["source_row"].asstr()[first:stop].tolist()
                   for split, (first, stop) in cache.split_ranges.items()}
    return summary, faces, sources


def cut(x: int, y: int, w: int, h: int) -> np.ndarray:
    return PHOTO[y:y + h, x:x + w]


def test_default_margin_and_square_cut_the_expected_pixels(tmp_path):
    _, plain, _ = preprocess(tmp_path, [], work="plain")
    np.testing.assert_array_equal(plain["train"][0], cut(*INSIDE))
    _, margin, _ = preprocess(tmp_path, ["faces.margin=0.5"], work="margin")
    np.testing.assert_array_equal(margin["train"][1], cut(*INSIDE))  # SMALL grown by half its size each side
    _, square, _ = preprocess(tmp_path, ["faces.square=true"], work="square")
    np.testing.assert_array_equal(square["train"][2], cut(10, 16, 16, 16))  # WIDE widened about its centre
    np.testing.assert_array_equal(square["train"][0], plain["train"][0])  # a square box stays as it is


def test_out_of_bounds_pad_replicates_the_edge_and_clamp_keeps_the_part_inside(tmp_path):
    _, padded, _ = preprocess(tmp_path, ["faces.out_of_bounds=pad"], work="pad")
    inside = cut(56, 56, 8, 8)
    np.testing.assert_array_equal(padded["train"][3], np.pad(inside, ((0, 8), (0, 8)), mode="edge"))
    _, clamped, _ = preprocess(tmp_path, ["faces.out_of_bounds=clamp"], work="clamp")
    # The 8 x 8 part inside the photo, enlarged to 16 x 16: each 2 x 2 block averages to one of its pixels.
    blocks = clamped["train"][3].astype(float).reshape(8, 2, 8, 2).mean(axis=(1, 3))
    assert np.abs(blocks - inside).max() <= 2


def test_align_turns_faces_with_landmarks_and_crops_rows_without_them_as_they_are(tmp_path):
    _, plain, _ = preprocess(tmp_path, [], landmarks=True, work="plain")
    _, aligned, _ = preprocess(tmp_path, ["faces.align=true"], landmarks=True, work="aligned")
    assert np.abs(aligned["train"][0].astype(int) - plain["train"][0]).mean() > 2  # turned
    np.testing.assert_array_equal(aligned["train"][2], plain["train"][2])  # no landmarks: as it is
    np.testing.assert_array_equal(aligned["test"][0], plain["test"][0])


def test_sets_choose_the_manual_and_the_automatic_lists(tmp_path):
    _, manual, sources = preprocess(tmp_path, [], work="manual")
    assert sources["train"] == [f"training.csv:{line}" for line in range(2, 6)]
    assert sources["test"] == ["validation.csv:2"]
    _, automatic, sources = preprocess(tmp_path, ["dataset.sets=[automatic]"], work="automatic")
    assert sources == {"train": ["automatically_annotated.csv:2", "automatically_annotated.csv:3"],
                       "val": [], "test": []}
    np.testing.assert_array_equal(automatic["train"][0], manual["train"][3])  # LEAVING, clamped
    _, both, sources = preprocess(tmp_path, ["dataset.sets=[manual,automatic]"], work="both")
    assert len(sources["train"]) == 6 and len(sources["test"]) == 1


def test_overwrite_replaces_a_cache_built_from_other_settings(tmp_path):
    preprocess(tmp_path, [], work="same")
    with pytest.raises(UserInputError, match="overwrite=true"):
        preprocess(tmp_path, ["faces.margin=0.5"], work="same")
    _, faces, _ = preprocess(tmp_path, ["faces.margin=0.5", "overwrite=true"], work="same")
    np.testing.assert_array_equal(faces["train"][1], cut(*INSIDE))  # the new settings' faces


@pytest.mark.parametrize(("override", "message"), [
    ("num_workers=-1", "num_workers: -1"),
    ("shard.count=0", "shard.count: 0"),
    ("shard.index=2", r"shard.index: 2 is not in 0..0"),
])
def test_bad_worker_or_shard_settings_stop_before_any_work(tmp_path, override, message):
    with pytest.raises(UserInputError, match=message):
        preprocess(tmp_path, [override])
    assert not list((tmp_path / "work").rglob("*.h5*"))
