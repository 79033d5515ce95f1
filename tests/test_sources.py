"""Sources other than AffectNet: FER2013's CSV and class-per-folder trees, mapped by name."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from affectexp.data.cache import FaceCache
from affectexp.data.labels import FER2013_EXPRESSIONS, ClassSetError, expression_code_of_name
from affectexp.tasks.preprocess import run_preprocess
from affectexp.data.sources.rows import SourceError
from conftest import compose_config

BASIC7 = ["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger"]


def fer_pixels(seed: int, side: int = 48) -> np.ndarray:
    """A face-sized (side, side) uint8 pattern that differs per seed and is not symmetric."""
    return (np.arange(side * side).reshape(side, side) * 7 + seed * 31).astype(np.uint8)


def write_fer(root: Path, header: str, lines: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "fer2013.csv").write_text("\n".join([header, *lines]) + "\n")
    return root


def fer_line(code: int, usage: str, seed: int, order: tuple[str, ...]) -> str:
    fields = {"emotion": str(code), "pixels": " ".join(map(str, fer_pixels(seed).ravel())), "Usage": usage}
    return ",".join(fields[name] for name in order)


# The Kaggle file and the variant with leading spaces in its header (and Usage before pixels).
FER_HEADERS = {"plain": ("emotion", "pixels", "Usage"), "spaced": ("emotion", " Usage", " pixels")}


@pytest.mark.parametrize("variant", sorted(FER_HEADERS))
def test_fer2013_faces_labels_and_splits(tmp_path, variant):
    header = FER_HEADERS[variant]
    order = tuple(name.strip() for name in header)
    usages = ["Training", "Training", "PublicTest", "PrivateTest"]
    lines = [fer_line(code, usage, 10 * code + i, order) for code in range(7) for i, usage in enumerate(usages)]
    root = write_fer(tmp_path / "fer", ",".join(header), lines)
    cfg = compose_config("preprocess", tmp_path / "work", [
        "dataset=fer2013", f"dataset.root={root}", "classes=basic7", "cache.size=48", "num_workers=0"])
    summary = run_preprocess(cfg)

    assert summary.skipped == {}
    with FaceCache(cfg.cache.path) as cache:
        # PublicTest is the validation split: no training row is moved there.
        assert {s: cache.split_size(s) for s in ("train", "val", "test")} == {"train": 14, "val": 7, "test": 7}
        faces, labels = cache.faces[:], cache.file["labels"][:]
        source_rows = cache.file["source_row"].asstr()[:]
    for face, label, source_row in zip(faces, labels, source_rows):
        index = int(source_row.split(":")[1]) - 2  # line 2 is the first data line
        code, i = divmod(index, len(usages))
        # 48x48 in, 48x48 out: the stored face is exactly the pixel string, row by row.
        assert np.array_equal(face[:, :, 0], fer_pixels(10 * code + i))
        # FER's codes follow another order than AffectNet's: 0 is angry, 6 neutral.
        assert BASIC7[label] == {"angry": "anger"}.get(FER2013_EXPRESSIONS[code], FER2013_EXPRESSIONS[code])


def test_fer2013_bad_lines_are_reported(tmp_path):
    order = FER_HEADERS["plain"]
    good = fer_line(3, "Training", 1, order)
    short = "4," + " ".join(["9"] * 2303) + ",Training"  # one grey value missing
    lines = [good, good, "7," + good[2:], short, "5,1 2 3", good.replace("Training", "Other"), fer_line(0, "PrivateTest", 2, order)]
    root = write_fer(tmp_path / "fer", ",".join(order), lines)
    cfg = compose_config("preprocess", tmp_path / "work", [
        "dataset=fer2013", f"dataset.root={root}", "classes=basic5", "cache.size=32", "num_workers=0",
        "split.val_fraction=0"])
    summary = run_preprocess(cfg)
    report = pd.read_csv(summary.report_path)
    assert dict(zip(report["row_id"], report["reason"])) == {
        "fer2013.csv:4": "bad_expression",  # emotion 7 does not exist in FER2013
        "fer2013.csv:5": "unreadable_image",  # 2303 values are not a square image
        "fer2013.csv:6": "bad_row",  # two fields instead of three
        "fer2013.csv:7": "unknown_usage",
    }
    assert summary.faces_written == 3


@pytest.mark.parametrize(("content", "message"), [
    ("label,image\n1,2 3\n", r"fer2013\.csv: expected columns emotion,pixels,Usage; found label,image"),
    ("", r"fer2013\.csv: empty file"),
    ("\x00\x01\x02\x1b[2J\xff\xfe\n", r"fer2013\.csv: line 1 is not UTF-8 text \(a binary file, or another encoding\); "
                                     r"expected columns emotion,pixels,Usage$"),
])
def test_fer2013_wrong_or_empty_csv_stops_before_any_work(tmp_path, content, message):
    root = tmp_path / "fer"
    root.mkdir()
    (root / "fer2013.csv").write_bytes(content.encode("latin-1"))
    cfg = compose_config("preprocess", tmp_path / "work", ["dataset=fer2013", f"dataset.root={root}"])
    with pytest.raises(SourceError, match=message):
        run_preprocess(cfg)
    assert not Path(cfg.cache.path).parent.exists()


# Folder names as re-distributions spell them; each class gets its own grey level so that a
# face in the cache tells which folder it came from.
FOLDERS = {"angry": "anger", "Happy": "happy", "neutral": "neutral", "surprised": "surprise", "contempt": "contempt"}


def grey_of(expression: str) -> int:
    return 20 + 25 * expression_code_of_name(expression)


def write_image(path: Path, grey: int, suffix: str) -> None:
    """A small photo of one grey level, written in the format its suffix names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = np.full((30, 40), grey, dtype=np.uint8)
    ok, encoded = cv2.imencode(suffix.lower(), image)
    assert ok
    path.with_suffix(suffix).write_bytes(encoded.tobytes())


def make_tree(root: Path, splits: list[str], per_class: int = 3) -> Path:
    for split in splits:
        for folder, expression in FOLDERS.items():
            for i, suffix in zip(range(per_class), [".jpg", ".JPG", ".png"] * per_class):
                write_image(root / split / folder / f"{i}", grey_of(expression), suffix)
        write_image(root / split / "not_a_face_class" / "x", 0, ".jpg")
        (root / split / "labels.txt").write_text("not an image")
    return root


def test_folder_classes_are_mapped_by_name_not_position(tmp_path):
    root = make_tree(tmp_path / "tree", ["train", "test"])
    cfg = compose_config("preprocess", tmp_path / "work", [
        "dataset=folder", f"dataset.root={root}", "classes=basic5", "cache.size=16", "num_workers=0"])
    summary = run_preprocess(cfg)
    with FaceCache(cfg.cache.path) as cache:
        faces, labels = cache.faces[:], cache.file["labels"][:]
        names = cache.class_names
        assert cache.split_size("test") == 4 * 3
    assert len(faces) == 2 * 4 * 3  # contempt is outside basic5
    for face, label in zip(faces, labels):
        # Alphabetical folder order (Happy, angry, contempt, ...) is not the class order.
        assert abs(int(face.mean()) - grey_of(names[label])) <= 2
    report = pd.read_csv(summary.report_path)
    counts = report["reason"].value_counts().to_dict()
    assert counts == {"not_in_class_set": 6, "unknown_class": 2, "not_an_image": 2}
    assert set(report.loc[report["reason"] == "unknown_class", "row_id"]) == {
        "train/not_a_face_class/x.jpg", "test/not_a_face_class/x.jpg"}


def test_folder_without_split_folders_is_all_training(tmp_path):
    root = tmp_path / "tree"
    for folder in ("happy", "sad"):
        for i in range(10):
            write_image(root / folder / f"{i}", grey_of(folder), ".jpg")
    cfg = compose_config("preprocess", tmp_path / "work", [
        "dataset=folder", f"dataset.root={root}", "classes=basic5", "cache.size=16", "num_workers=0"])
    run_preprocess(cfg)
    with FaceCache(cfg.cache.path) as cache:
        assert (cache.split_size("train"), cache.split_size("val"), cache.split_size("test")) == (18, 2, 0)


def test_folder_mixing_split_and_class_folders_is_refused(tmp_path):
    root = tmp_path / "tree"
    write_image(root / "train" / "happy" / "a", 100, ".jpg")
    write_image(root / "sad" / "b", 100, ".jpg")
    cfg = compose_config("preprocess", tmp_path / "work", ["dataset=folder", f"dataset.root={root}"])
    with pytest.raises(SourceError, match=r"mixes split folders \['train'\] with other folders \['sad'\]"):
        run_preprocess(cfg)


def test_user_defined_class_set_accepts_aliases_and_refuses_unknown_names(tmp_path):
    root = make_tree(tmp_path / "tree", ["train"], per_class=2)
    cfg = compose_config("preprocess", tmp_path / "work", [
        "dataset=folder", f"dataset.root={root}", "classes.name=mine", "classes.names=[Angry,happy]",
        "cache.size=16", "num_workers=0", "split.val_fraction=0"])
    run_preprocess(cfg)
    with FaceCache(cfg.cache.path) as cache:
        assert cache.class_names == ["anger", "happy"]
        assert np.bincount(cache.file["labels"][:]).tolist() == [2, 2]
        assert Path(cfg.cache.path).name == "folder-gray16-mine.h5"
    wrong = compose_config("preprocess", tmp_path / "work", [
        "dataset=folder", f"dataset.root={root}", "classes.name=mine", "classes.names=[happy,bored]"])
    with pytest.raises(ClassSetError, match=r"classes.names: unknown expression name\(s\) \['bored'\]"):
        run_preprocess(wrong)


def test_folder_tree_wrapped_by_an_archive_and_nested_splits_read_as_the_plain_tree(tmp_path):
    plain = make_tree(tmp_path / "plain", ["train", "test"])
    wrapped = tmp_path / "wrapped"
    inner = wrapped / "archive" / "AffectNet"  # an archive's folder, then the data set's
    shutil.copytree(plain / "train", inner / "Train" / "train")  # a split folder nested in itself
    shutil.copytree(plain / "test", inner / "TEST")
    (wrapped / "archive" / "README.txt").write_text("not part of the tree")
    caches = {}
    for name, root in (("plain", plain), ("wrapped", wrapped)):
        cfg = compose_config("preprocess", tmp_path / f"work-{name}", [
            "dataset=folder", f"dataset.root={root}", "classes=basic5", "cache.size=16", "num_workers=0"])
        run_preprocess(cfg)
        with FaceCache(cfg.cache.path) as cache:
            caches[name] = {key: cache.file[key][:] for key in ("faces", "labels", "split")}
            recorded = cache.attr("config")["dataset"]["tree"]
            rows = cache.file["source_row"].asstr()[:].tolist()
    for key, values in caches["plain"].items():
        assert np.array_equal(caches["wrapped"][key], values), key
    assert recorded == "archive/AffectNet"
    assert all(row.startswith(("archive/AffectNet/Train/train/", "archive/AffectNet/TEST/")) for row in rows)


def test_folder_without_class_folders_names_what_it_found_in_one_line(tmp_path):
    root = tmp_path / "tree"
    for copy in ("copy1", "copy2"):  # two unpacked copies: which one is meant is the user's choice
        write_image(root / copy / "train" / "happy" / "a", 100, ".jpg")
    cfg = compose_config("preprocess", tmp_path / "work", [
        "dataset=folder", f"dataset.root={root}", "cache.size=16", "num_workers=0", "split.val_fraction=0"])
    with pytest.raises(SourceError) as raised:
        run_preprocess(cfg)
    message = str(raised.value)
    assert "\n" not in message and "no class folder found" in message
    assert "folders with files: copy1/train/happy, copy2/train/happy" in message and "dataset.tree=" in message
    chosen = compose_config("preprocess", tmp_path / "work", [
        "dataset=folder", f"dataset.root={root}", "dataset.tree=copy1", "cache.size=16", "num_workers=0",
        "split.val_fraction=0"])
    assert run_preprocess(chosen).faces_written == 1


def test_every_folder_file_is_in_the_cache_or_the_report_and_hidden_files_are_passed_over(tmp_path):
    root = make_tree(tmp_path / "tree", ["train", "test"], per_class=2)
    write_image(root / "train" / "loose", 60, ".jpg")  # an image outside any class folder
    write_image(root / "train" / "happy" / ".hidden", 60, ".jpg")  # e.g. macOS' ._ resource forks
    (root / "train" / "happy" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    write_image(root / "test" / ".thumbnails" / "happy", 60, ".jpg")
    cfg = compose_config("preprocess", tmp_path / "work", [
        "dataset=folder", f"dataset.root={root}", "classes=basic5", "cache.size=16", "num_workers=0",
        "split.val_fraction=0"])
    summary = run_preprocess(cfg)
    with FaceCache(cfg.cache.path) as cache:
        cached = cache.file["source_row"].asstr()[:].tolist()
    report = pd.read_csv(summary.report_path)
    files = {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
    hidden = {f for f in files if any(part.startswith(".") for part in Path(f).parts)}
    assert len(hidden) == 3
    accounted = cached + report["row_id"].tolist()
    assert sorted(accounted) == sorted(files - hidden)  # each visible file once, hidden ones never
    assert report.loc[report["row_id"] == "train/loose.jpg", "reason"].tolist() == ["no_class_folder"]
