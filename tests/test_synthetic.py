"""The embedded synthetic data set: AffectNet's layout, determinism, reuse, and face geometry."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from affectexp.data.affectnet_layout import (
    CSV_COLUMNS,
    LEFT_EYE,
    MANUAL_IMAGES_DIR,
    MANUAL_LISTS_DIR,
    NOT_ANNOTATED,
    RIGHT_EYE,
    TRAINING_CSV,
    VALIDATION_CSV,
    parse_landmarks,
)
from affectexp.data.synthetic import SyntheticFace, ensure_synthetic, generate_affectnet, render_face

AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal"
)
TRAIN_PER_CLASS, TEST_PER_CLASS, SEED = 3, 2, 7


def read_rows(root: Path, name: str) -> list[dict[str, str]]:
    with open(root / MANUAL_LISTS_DIR / name, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def all_files(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tiny_synthetic")
    generate_affectnet(root, TRAIN_PER_CLASS, TEST_PER_CLASS, seed=SEED, num_workers=1)
    return root


def test_both_lists_start_with_affectnets_exact_header(tiny_set):
    assert ",".join(CSV_COLUMNS) == AFFECTNET_HEADER
    for name in (TRAINING_CSV, VALIDATION_CSV):
        first_line = (tiny_set / MANUAL_LISTS_DIR / name).read_text(encoding="utf-8").split("\n", 1)[0]
        assert first_line == AFFECTNET_HEADER


def test_every_listed_photo_exists_in_its_subdirectory(tiny_set):
    for name in (TRAINING_CSV, VALIDATION_CSV):
        for row in read_rows(tiny_set, name):
            subdir, file_name = row["subDirectory_filePath"].split("/")
            assert subdir.isdigit()
            assert len(file_name) == 64 + 4 and file_name.endswith(".jpg")
            int(file_name[:64], 16)
            image = cv2.imread(str(tiny_set / MANUAL_IMAGES_DIR / subdir / file_name))
            assert image is not None and image.ndim == 3
            assert 160 <= image.shape[0] <= 640 and 160 <= image.shape[1] <= 640


def test_class_counts_and_shuffled_order(tiny_set):
    train = [int(r["expression"]) for r in read_rows(tiny_set, TRAINING_CSV)]
    test = [int(r["expression"]) for r in read_rows(tiny_set, VALIDATION_CSV)]
    counts = Counter(train)
    assert all(counts[code] == TRAIN_PER_CLASS for code in range(8))
    assert sum(counts[code] for code in (8, 9, 10)) >= 3
    assert set(counts[code] for code in (8, 9, 10)) != {0}
    assert Counter(test) == {code: TEST_PER_CLASS for code in range(8)}
    assert train != sorted(train)  # not grouped by class


def test_boxes_landmarks_and_affect_are_plausible(tiny_set):
    for row in read_rows(tiny_set, TRAINING_CSV) + read_rows(tiny_set, VALIDATION_CSV):
        image = cv2.imread(str(tiny_set / MANUAL_IMAGES_DIR / row["subDirectory_filePath"]))
        height, width = image.shape[:2]
        x, y, w, h = (int(row[k]) for k in ("face_x", "face_y", "face_width", "face_height"))
        assert x >= 0 and y >= 0 and w > 0 and h > 0
        inside = (min(x + w, width) - x) * (min(y + h, height) - y)
        assert inside >= 0.6 * w * h  # at most a part of the box leaves the photo
        points = parse_landmarks(row["facial_landmarks"])
        assert points is not None
        margin = 0.1 * max(w, h)
        assert (points[:, 0] >= x - margin).all() and (points[:, 0] <= x + w + margin).all()
        assert (points[:, 1] >= y - margin).all() and (points[:, 1] <= y + h + margin).all()
        code, valence, arousal = int(row["expression"]), float(row["valence"]), float(row["arousal"])
        if code >= 8:
            assert valence == arousal == NOT_ANNOTATED
        else:
            assert -1.0 <= valence <= 1.0 and -1.0 <= arousal <= 1.0


def test_valence_follows_the_expression():
    faces = {code: [render_face(np.random.default_rng([1, code, i]), code) for i in range(5)] for code in (1, 2, 6)}
    assert all(f.valence > 0 for f in faces[1])
    assert all(f.valence < 0 for f in faces[2] + faces[6])
    assert np.mean([f.arousal for f in faces[6]]) > np.mean([f.arousal for f in faces[2]])


def test_same_seed_gives_identical_bytes_whatever_the_worker_count(tiny_set, tmp_path):
    again = tmp_path / "again"
    generate_affectnet(again, TRAIN_PER_CLASS, TEST_PER_CLASS, seed=SEED, num_workers=2)
    assert all_files(again) == all_files(tiny_set)


def test_another_seed_gives_other_photos(tiny_set, tmp_path):
    other = tmp_path / "other"
    generate_affectnet(other, TRAIN_PER_CLASS, TEST_PER_CLASS, seed=SEED + 1, num_workers=1)
    assert read_rows(other, TRAINING_CSV) != read_rows(tiny_set, TRAINING_CSV)


def test_ensure_synthetic_reuses_then_regenerates_for_new_parameters(tmp_path):
    root = tmp_path / "data"
    foreign = root / "notes.txt"
    root.mkdir()
    foreign.write_text("not the generator's")
    assert ensure_synthetic(root, 2, 1, seed=3, num_workers=1) is True
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert ensure_synthetic(root, 2, 1, seed=3, num_workers=1) is False
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == before

    old_photos = {p for p in before if p.suffix == ".jpg"}
    assert ensure_synthetic(root, 3, 1, seed=4, num_workers=1) is True
    assert Counter(int(r["expression"]) for r in read_rows(root, TRAINING_CSV))[0] == 3
    listed = {root / MANUAL_IMAGES_DIR / r["subDirectory_filePath"] for r in read_rows(root, TRAINING_CSV)}
    listed |= {root / MANUAL_IMAGES_DIR / r["subDirectory_filePath"] for r in read_rows(root, VALIDATION_CSV)}
    assert set(root.rglob("*.jpg")) == listed  # nothing left over from the first set
    assert old_photos - listed  # the first set's own photos were deleted...
    assert foreign.read_text() == "not the generator's"  # ...and nothing else


def test_interrupted_generation_is_not_taken_as_complete(tmp_path, monkeypatch):
    import affectexp.data.synthetic.dataset as dataset

    calls = []

    def dies_on_the_fifth_photo(rng, code, **options):
        calls.append(code)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return render_face(rng, code, **options)

    root = tmp_path / "data"
    monkeypatch.setattr(dataset, "render_face", dies_on_the_fifth_photo)
    with pytest.raises(KeyboardInterrupt):
        ensure_synthetic(root, 1, 1, seed=0, num_workers=1)
    monkeypatch.undo()
    assert not (root / ".synthetic-complete.json").exists()
    assert ensure_synthetic(root, 1, 1, seed=0, num_workers=1) is True
    assert ensure_synthetic(root, 1, 1, seed=0, num_workers=1) is False


def test_refuses_to_overwrite_lists_it_did_not_write(tmp_path):
    lists = tmp_path / MANUAL_LISTS_DIR
    lists.mkdir()
    (lists / TRAINING_CSV).write_text(AFFECTNET_HEADER + "\n")
    with pytest.raises(FileExistsError, match="did not"):
        ensure_synthetic(tmp_path, 1, 1, num_workers=1)
    assert (lists / TRAINING_CSV).read_text() == AFFECTNET_HEADER + "\n"


@pytest.mark.parametrize("code", range(11))
def test_render_face_returns_the_documented_types(code):
    face = render_face(np.random.default_rng([5, code]), code)
    assert isinstance(face, SyntheticFace)
    assert face.image.dtype == np.uint8 and face.image.ndim == 3 and face.image.shape[2] == 3
    assert all(160 <= side <= 640 for side in face.image.shape[:2])
    assert all(isinstance(v, int) for v in face.box)
    assert face.landmarks.shape == (68, 2) and face.landmarks.dtype == np.float32
    x, y, w, h = face.box
    shorter = min(face.image.shape[:2])
    assert 0.25 * shorter <= max(w, h) <= 0.95 * shorter
    if code < 8:
        # The detector-style box holds the whole landmark set (jaw, brows, eyes, mouth).
        tolerance = 1.0  # the box is rounded to whole pixels
        assert (face.landmarks[:, 0] >= x - tolerance).all() and (face.landmarks[:, 0] <= x + w + tolerance).all()
        assert (face.landmarks[:, 1] >= y - tolerance).all() and (face.landmarks[:, 1] <= y + h + tolerance).all()
        assert -1.0 <= face.valence <= 1.0 and -1.0 <= face.arousal <= 1.0
    else:  # codes 8-10 (none, uncertain, non-face) are not annotated, as in AffectNet
        assert (face.valence, face.arousal) == (NOT_ANNOTATED, NOT_ANNOTATED)


def eye_line_degrees(face: SyntheticFace) -> float:
    """Angle of the line from the image-left eye to the image-right eye; positive = counter-clockwise."""
    left, right = face.landmarks[LEFT_EYE].mean(axis=0), face.landmarks[RIGHT_EYE].mean(axis=0)
    return float(np.degrees(np.arctan2(-(right[1] - left[1]), right[0] - left[0])))


@pytest.mark.parametrize("roll", [0.0, 20.0, -12.5])
def test_forced_roll_turns_the_eye_line(roll):
    for i in range(5):
        face = render_face(np.random.default_rng([9, i]), 1 + i % 7, roll_degrees=roll)
        assert eye_line_degrees(face) == pytest.approx(roll, abs=1.0)


def test_random_roll_stays_within_15_degrees():
    angles = [eye_line_degrees(render_face(np.random.default_rng([4, i]), 0)) for i in range(20)]
    assert max(abs(a) for a in angles) <= 15.5
    assert np.std(angles) > 3.0


def test_faces_differ_by_expression_inside_the_box():
    # Same generator state, so the same photo and person, with two expressions: the crop changes.
    crops = []
    for code in (0, 3):
        face = render_face(np.random.default_rng(11), code)
        x, y, w, h = face.box
        crops.append(cv2.resize(face.image[y : y + h, x : x + w], (48, 48)).astype(np.float32))
    assert np.abs(crops[0] - crops[1]).mean() > 2.0


def test_data_side_never_imports_tensorflow_keras_or_mlflow():
    code = (
        "import sys, numpy as np, affectexp.data.synthetic as s;"
        "s.render_face(np.random.default_rng(0), 1);"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'keras', 'mlflow'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
