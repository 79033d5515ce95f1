"""Cutting faces out of real-world files: alignment, odd formats, boxes that leave the image."""

from __future__ import annotations

import io
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from affectexp.data import affectnet_layout as layout
from affectexp.data.cache import FaceCache
from affectexp.data.faces import FaceSpec, load_face
from affectexp.tasks.preprocess import run_preprocess
from affectexp.data.sources.folder import FolderSource
from affectexp.data.synthetic import render_face
from conftest import compose_config


def eye_marker_photo(face, path: Path) -> None:
    """A black photo of the face's size with a white disc on each eye's centre, as PNG."""
    canvas = np.zeros(face.image.shape[:2], np.uint8)
    for eye in (layout.LEFT_EYE, layout.RIGHT_EYE):
        x, y = face.landmarks[eye].mean(axis=0)
        cv2.circle(canvas, (int(round(x)), int(round(y))), max(2, face.box[2] // 25), 255, -1)
    cv2.imwrite(str(path), canvas)


def eye_rows(face_crop: np.ndarray) -> list[float]:
    """Rows of the two bright discs' centres in a (H, W, 1) crop, left disc first."""
    count, _, _, centres = cv2.connectedComponentsWithStats((face_crop[:, :, 0] > 127).astype(np.uint8))
    assert count == 3, "expected both eyes in the crop"
    return [float(y) for x, y in sorted(centres[1:].tolist())]


@pytest.mark.parametrize("roll", [20.0, -20.0])
def test_alignment_levels_a_rotated_face(tmp_path, roll):
    face = render_face(np.random.default_rng(3), 1, roll_degrees=roll)
    path = tmp_path / "face.png"
    eye_marker_photo(face, path)
    box = tuple(float(v) for v in face.box)
    tilted = eye_rows(load_face(str(path), box, FaceSpec(size=96), face.landmarks))
    level = eye_rows(load_face(str(path), box, FaceSpec(size=96, align=True), face.landmarks))
    assert abs(tilted[0] - tilted[1]) > 5  # 20 degrees of roll: the eyes are rows apart
    assert abs(level[0] - level[1]) < 1
    # The face stays in its box: the eyes are still in the upper half, near the centre line.
    assert 20 < np.mean(level) < 60


def test_aligned_faces_through_the_pipeline(tmp_path):
    """Landmarks travel with the worker tasks: faces.align=true levels the faces in the cache."""
    root = tmp_path / "affectnet"
    images = root / layout.MANUAL_IMAGES_DIR / "1"
    images.mkdir(parents=True)
    lines = []
    for i, roll in enumerate([20.0, -15.0, 10.0, -20.0]):
        face = render_face(np.random.default_rng(i), 1, roll_degrees=roll)
        eye_marker_photo(face, images / f"{i}.jpg")  # a PNG behind a .jpg name, as found in the wild
        lines.append(",".join([f"1/{i}.jpg", *map(str, face.box), layout.format_landmarks(face.landmarks),
                               "1", "0.5", "0.5"]))
    lists = root / layout.MANUAL_LISTS_DIR
    lists.mkdir()
    header = ",".join(layout.CSV_COLUMNS)
    (lists / layout.TRAINING_CSV).write_text("\n".join([header, *lines]) + "\n")
    (lists / layout.VALIDATION_CSV).write_text(header + "\n")
    cfg = compose_config("preprocess", tmp_path / "work", [
        "dataset=affectnet", f"dataset.root={root}", "faces.align=true", "cache.size=64", "num_workers=1",
        "split.val_fraction=0"])
    run_preprocess(cfg)
    with FaceCache(cfg.cache.path) as cache:
        faces = cache.faces[:]
    assert len(faces) == 4
    for crop in faces:
        rows = eye_rows(crop)
        assert abs(rows[0] - rows[1]) < 1


def encoded(image: np.ndarray, suffix: str) -> bytes:
    ok, data = cv2.imencode(suffix, image)
    assert ok
    return data.tobytes()


def cmyk_jpeg(grey: int) -> bytes:
    """A CMYK JPEG (as print workflows write them) showing one grey level."""
    buffer = io.BytesIO()
    Image.new("CMYK", (64, 48), (0, 0, 0, 255 - grey)).save(buffer, "JPEG", quality=95)
    return buffer.getvalue()


GREY = 150
QUIRKS = {
    "cmyk.jpg": lambda: cmyk_jpeg(GREY),
    "single_channel.jpg": lambda: encoded(np.full((48, 64), GREY, np.uint8), ".jpg"),
    "png_behind.jpg": lambda: encoded(np.full((48, 64, 3), GREY, np.uint8), ".png"),
    "upper_case.JPG": lambda: encoded(np.full((48, 64, 3), GREY, np.uint8), ".jpg"),
    "rgba.png": lambda: encoded(np.full((48, 64, 4), GREY, np.uint8), ".png"),
    "sixteen_bit.png": lambda: encoded(np.full((48, 64), GREY * 257, np.uint16), ".png"),
}


@pytest.mark.parametrize("name", sorted(QUIRKS))
@pytest.mark.parametrize("color", ["gray", "rgb"])
def test_odd_files_decode_to_the_right_face(tmp_path, name, color):
    path = tmp_path / name
    path.write_bytes(QUIRKS[name]())
    spec = FaceSpec(size=16, color=color)
    face = load_face(str(path), (8.0, 4.0, 40.0, 40.0), spec)
    assert face.shape == (16, 16, spec.channels) and face.dtype == np.uint8
    assert np.abs(face.astype(int) - GREY).max() <= 2


def test_folder_source_lists_upper_case_and_disguised_files(tmp_path):
    for name, make in QUIRKS.items():
        path = tmp_path / "train" / "happy" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(make())
    rows = FolderSource("tree", str(tmp_path)).read().rows
    assert sorted(Path(p).name for p in rows["path"]) == sorted(QUIRKS)


def test_box_leaving_the_image_when_aligned(tmp_path):
    face = render_face(np.random.default_rng(5), 1, roll_degrees=15)
    path = tmp_path / "face.png"
    cv2.imwrite(str(path), face.image)
    height, width = face.image.shape[:2]
    box = (width - face.box[2] / 2, height - face.box[3] / 2, float(face.box[2]), float(face.box[3]))
    for mode in ("clamp", "pad"):
        crop = load_face(str(path), box, FaceSpec(size=32, out_of_bounds=mode, align=True), face.landmarks)
        assert crop.shape == (32, 32, 1)


def test_aligned_box_leaving_the_image_is_padded_with_its_edge_or_clamped_to_the_part_inside(tmp_path):
    """Eyes already level: the alignment turns nothing, so its crop must be the plain one."""
    photo = (2 * np.arange(64)[:, None] + np.arange(64)[None, :]).astype(np.uint8)  # distinct, smooth
    path = tmp_path / "gradient.png"
    cv2.imwrite(str(path), photo)
    landmarks = np.full((68, 2), 60.0, np.float32)
    landmarks[layout.LEFT_EYE], landmarks[layout.RIGHT_EYE] = (58.0, 60.0), (62.0, 60.0)
    box = (56.0, 56.0, 16.0, 16.0)  # columns and rows 56..71 of a 64 x 64 photo
    inside = photo[56:, 56:]
    spec = FaceSpec(size=16, align=True, reduced_decoding=False)
    padded = load_face(str(path), box, FaceSpec(**{**spec.__dict__, "out_of_bounds": "pad"}), landmarks)[:, :, 0]
    np.testing.assert_array_equal(padded, np.pad(inside, ((0, 8), (0, 8)), mode="edge"))
    clamped = load_face(str(path), box, FaceSpec(**{**spec.__dict__, "out_of_bounds": "clamp"}), landmarks)[:, :, 0]
    # The 8 x 8 part inside the photo, enlarged to 16 x 16: each 2 x 2 block averages to one of its pixels.
    assert np.abs(clamped.astype(float).reshape(8, 2, 8, 2).mean(axis=(1, 3)) - inside).max() <= 2


def test_missing_box_means_the_whole_image(tmp_path):
    image = np.zeros((40, 60), np.uint8)
    image[:, 30:] = 200  # right half bright
    path = tmp_path / "precropped.png"
    cv2.imwrite(str(path), image)
    face = load_face(str(path), (np.nan,) * 4, FaceSpec(size=20, reduced_decoding=True))[:, :, 0]
    assert face[:, :9].max() == 0 and face[:, 11:].min() == 200
