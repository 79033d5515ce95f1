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


# The crop geometry, value by value: a face cut a pixel off or a margin applied twice changes
# every cached face without any error, so each rule is pinned to hand-computed numbers.

POSITIONS = (16 * np.arange(16)[:, None] + np.arange(16)[None, :]).astype(np.uint8)  # value = 16 row + column


@pytest.mark.parametrize("box, margin, square, grown", [
    ((10.0, 20.0, 40.0, 20.0), 0.0, False, (10.0, 20.0, 40.0, 20.0)),
    ((10.0, 20.0, 40.0, 20.0), 0.25, False, (0.0, 15.0, 60.0, 30.0)),  # a quarter of w and h on each side
    ((10.0, 20.0, 40.0, 20.0), 0.25, True, (0.0, 0.0, 60.0, 60.0)),  # then squared about the same centre
    ((10.0, 20.0, 20.0, 40.0), 0.0, True, (0.0, 20.0, 40.0, 40.0)),  # a tall box grows sideways
    ((5.0, 5.0, 30.0, 30.0), 0.5, True, (-10.0, -10.0, 60.0, 60.0)),  # square already: only the margin
])
def test_expand_box_grows_by_the_margin_on_each_side_then_squares_about_the_centre(box, margin, square, grown):
    from affectexp.data.faces import expand_box

    assert expand_box(box, margin, square) == pytest.approx(grown)


def test_crop_box_inside_the_image_is_the_rounded_box_exactly():
    from affectexp.data.faces import crop_box

    for mode in ("clamp", "pad"):
        # Edges round to whole pixels: x 2.4 -> 2, x + w 7.6 -> 8; y 3.6 -> 4, y + h 6.5 -> 6 (half to even).
        np.testing.assert_array_equal(crop_box(POSITIONS, (2.4, 3.6, 5.2, 2.9), mode), POSITIONS[4:6, 2:8])


@pytest.mark.parametrize("box, rows, columns", [
    ((-2.0, 3.0, 6.0, 4.0), slice(3, 7), slice(0, 4)),  # leaves on the left
    ((12.0, 13.0, 6.0, 5.0), slice(13, 16), slice(12, 16)),  # leaves bottom and right
    ((-3.0, -1.0, 20.0, 18.0), slice(0, 16), slice(0, 16)),  # larger than the image on every side
])
def test_box_leaving_the_image_is_clamped_to_the_part_inside_or_padded_with_the_edge(box, rows, columns):
    from affectexp.data.faces import crop_box

    inside = POSITIONS[rows, columns]
    np.testing.assert_array_equal(crop_box(POSITIONS, box, "clamp"), inside)
    x0, y0 = int(box[0]), int(box[1])
    x1, y1 = x0 + int(box[2]), y0 + int(box[3])
    padding = ((rows.start - y0, y1 - rows.stop), (columns.start - x0, x1 - columns.stop))
    np.testing.assert_array_equal(crop_box(POSITIONS, box, "pad"), np.pad(inside, padding, mode="edge"))


@pytest.mark.parametrize("box, refused", [
    ((14.0, 0.0, 4.0, 4.0), False),  # 2 columns inside: the smallest face cut
    ((15.0, 0.0, 4.0, 4.0), True),  # 1 column inside
    ((0.0, -3.0, 4.0, 4.0), True),  # 1 row inside
    ((20.0, 20.0, 4.0, 4.0), True),  # wholly outside
])
def test_a_box_with_less_than_two_pixels_inside_the_image_is_refused(box, refused):
    from affectexp.data.faces import FaceError, crop_box

    for mode in ("clamp", "pad"):
        if refused:
            with pytest.raises(FaceError) as error:
                crop_box(POSITIONS, box, mode)
            assert error.value.reason == "box_outside_image"
        else:
            assert crop_box(POSITIONS, box, mode).shape == {"clamp": (4, 2), "pad": (4, 4)}[mode]


@pytest.mark.parametrize("box", [(3.0, 4.0, 8.0, 6.0), (-2.0, 3.0, 6.0, 4.0), (12.0, 13.0, 6.0, 5.0)])
@pytest.mark.parametrize("mode", ["clamp", "pad"])
def test_aligned_crop_without_a_turn_is_the_plain_crop(box, mode):
    """The aligned path cuts its box with one warpAffine: unturned, it must give the plain crop's pixels."""
    from affectexp.data.faces import aligned_crop, crop_box

    np.testing.assert_array_equal(aligned_crop(POSITIONS, box, 0.0, mode), crop_box(POSITIONS, box, mode))


def test_aligned_crop_turns_about_the_box_centre():
    """A quarter turn of a square box centred in the image maps its rows onto its columns."""
    from affectexp.data.faces import aligned_crop

    turned = aligned_crop(POSITIONS, (4.0, 4.0, 8.0, 8.0), 90.0, "pad")
    np.testing.assert_array_equal(turned, np.rot90(POSITIONS[4:12, 4:12]))


def test_resize_uses_area_when_shrinking_and_cubic_when_enlarging():
    from affectexp.data.faces import resize_face

    rng = np.random.default_rng(0)
    large, small, mixed = (rng.integers(0, 256, shape, dtype=np.uint8) for shape in ((40, 40), (10, 10), (40, 10)))
    np.testing.assert_array_equal(resize_face(large, 16), cv2.resize(large, (16, 16), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(resize_face(small, 16), cv2.resize(small, (16, 16), interpolation=cv2.INTER_CUBIC))
    # Enlarged along one side: cubic, since area would smear that side's pixels into blocks.
    np.testing.assert_array_equal(resize_face(mixed, 16), cv2.resize(mixed, (16, 16), interpolation=cv2.INTER_CUBIC))
    exact = rng.integers(0, 256, (16, 16), dtype=np.uint8)
    np.testing.assert_array_equal(resize_face(exact, 16), exact)


@pytest.mark.parametrize("shorter, size, factor", [
    (768, 48, 8), (767, 48, 4), (384, 48, 4), (383, 48, 2), (192, 48, 2), (191, 48, 1), (40, 48, 1),
])
def test_reduced_decoding_keeps_the_box_twice_the_face_size(shorter, size, factor):
    from affectexp.data.faces import reduction_factor

    assert reduction_factor(shorter, shorter + 100, size) == factor
    assert reduction_factor(shorter + 100, shorter, size) == factor  # the shorter side decides


def test_pixel_text_is_a_square_grey_image_or_refused(tmp_path):
    from affectexp.data.faces import FaceError, decode_pixel_text

    def text(values: str) -> np.ndarray:
        return np.frombuffer(values.encode(), np.uint8)

    np.testing.assert_array_equal(decode_pixel_text(text("0 255 10 20"), "gray"), [[0, 255], [10, 20]])
    rgb = decode_pixel_text(text("0 255 10 20"), "rgb")
    assert rgb.shape == (2, 2, 3) and (rgb == np.array([[0, 255], [10, 20]])[:, :, None]).all()
    for bad in ("0 1 2", "7", "0 1 2 256", "0 1 -2 3", "0 1 x 3", ""):
        with pytest.raises(FaceError) as error:
            decode_pixel_text(text(bad), "gray")
        assert error.value.reason == "unreadable_image", bad


def test_image_bytes_are_the_whole_file_or_the_span(tmp_path):
    from affectexp.data.faces import FaceError, read_image_bytes

    path = tmp_path / "bytes"
    path.write_bytes(bytes(range(10)))
    np.testing.assert_array_equal(read_image_bytes(str(path)), np.arange(10))
    np.testing.assert_array_equal(read_image_bytes(str(path), (3, 4)), [3, 4, 5, 6])
    (tmp_path / "empty").write_bytes(b"")
    for where, reason in ((tmp_path / "empty", "unreadable_image"), (tmp_path / "absent", "missing_file"),
                          (tmp_path, "missing_file")):
        with pytest.raises(FaceError) as error:
            read_image_bytes(str(where))
        assert error.value.reason == reason
