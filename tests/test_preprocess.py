"""Preprocessing: AffectNet layout -> HDF5 cache of uint8 faces, report of skipped rows."""

from __future__ import annotations

import copy
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest
from hydra.utils import instantiate
from omegaconf import open_dict

from affectexp.data import affectnet_layout as layout
from affectexp.data.cache import SCHEMA_VERSION, CacheError, FaceCache
from affectexp.data.faces import FaceSpec, crop_box, load_face, reduction_factor
from affectexp.tasks.preprocess import content_config, content_fingerprint, report_path_of, run_preprocess
from affectexp.data.sources.rows import SourceError, recorded_content
from conftest import TEST_PER_CLASS, TRAIN_PER_CLASS, compose_config, wait_until_ended, worker_pids

HEADER = ",".join(layout.CSV_COLUMNS)


def test_cache_shapes_dtypes_and_counts(built_cache):
    summary, cfg = built_cache
    with h5py.File(cfg.cache.path, "r") as cache:
        faces = cache["faces"]
        assert faces.dtype == np.uint8 and faces.shape[1:] == (48, 48, 1)
        assert faces.chunks[0] == cfg.cache.chunk_rows and faces.compression is None
        split = cache["split"][:]
        labels = cache["labels"][:]
        assert len(labels) == len(split) == faces.shape[0] == summary.faces_written
        # The seed's 5 classes of AffectNet's 8: codes 0,1,2,3,6.
        assert sorted(set(cache["expression"][:].tolist())) == [0, 1, 2, 3, 6]
        val_per_class = round(TRAIN_PER_CLASS * cfg.split.val_fraction)
        for code, expected in ((0, TRAIN_PER_CLASS - val_per_class), (1, val_per_class), (2, TEST_PER_CLASS)):
            assert np.bincount(labels[split == code], minlength=5).tolist() == [expected] * 5
        # Each split is one contiguous range, in train, val, test order.
        assert (np.diff(split.astype(int)) >= 0).all()
        assert cache.attrs["schema_version"] == SCHEMA_VERSION
    with FaceCache(cfg.cache.path) as cache:
        assert cache.class_names == ["neutral", "happy", "sad", "surprise", "anger"]
        assert cache.split_size("test") == 5 * TEST_PER_CLASS
        assert cache.attr("config")["cache"]["size"] == 48


def test_left_out_rows_are_reported(built_cache):
    summary, cfg = built_cache
    report = pd.read_csv(summary.report_path)
    assert list(report.columns) == ["row_id", "path", "reason"]
    counts = report["reason"].value_counts().to_dict()
    # fear, disgust and contempt are outside the 5-class set; codes 8-10 are not expressions.
    assert counts["not_in_class_set"] == 3 * (TRAIN_PER_CLASS + TEST_PER_CLASS)
    assert counts["non_expression"] > 0
    assert summary.skipped == counts
    with FaceCache(cfg.cache.path) as cache:
        assert cache.attr("skipped_counts") == counts


def test_rerun_reuses_and_changed_inputs_refuse(built_cache):
    summary, cfg = built_cache
    assert run_preprocess(cfg).reused
    changed = cfg.copy()
    changed.faces.margin = 0.1
    with pytest.raises(CacheError, match="overwrite=true"):
        run_preprocess(changed)


def without_difficulty(cfg):
    """The config as it was before dataset.difficulty and dataset.realism existed."""
    before = copy.deepcopy(cfg)
    with open_dict(before.dataset):
        del before.dataset["difficulty"], before.dataset["realism"]
    return before


def test_easy_cache_built_before_dataset_difficulty_is_still_up_to_date(built_cache):
    _, cfg = built_cache
    assert cfg.dataset.difficulty == "easy"
    # The same cache, reached from a config without the keys: the fingerprint did not move.
    assert run_preprocess(without_difficulty(cfg)).reused
    with FaceCache(cfg.cache.path) as cache:
        recorded = cache.attr("config")["dataset"]
    assert "difficulty" not in recorded and "realism" not in recorded


def test_only_a_difficulty_other_than_easy_changes_the_fingerprint(built_cache):
    _, cfg = built_cache
    rows = instantiate(cfg.dataset).read().rows  # the same rows for every config: only the config differs

    def fingerprint(config) -> str:
        return content_fingerprint(recorded_content(content_config(config), instantiate(config.dataset)), rows)

    easy = fingerprint(cfg)
    assert fingerprint(without_difficulty(cfg)) == easy
    spelt_out = copy.deepcopy(cfg)
    spelt_out.dataset.realism = {"label_noise": 0.0, "strength": [0.5, 1.0]}  # easy's own values
    assert fingerprint(spelt_out) == easy
    hard = copy.deepcopy(cfg)
    hard.dataset.difficulty = "hard"
    assert fingerprint(hard) != easy
    hard_record = recorded_content(content_config(hard), instantiate(hard.dataset))["dataset"]
    assert hard_record["difficulty"] == "hard" and hard_record["realism"]["label_noise"] == 0.12
    one_knob = copy.deepcopy(hard)
    one_knob.dataset.realism = {"label_noise": 0.2}
    assert fingerprint(one_knob) not in (easy, fingerprint(hard))


def test_added_or_changed_images_make_the_cache_stale(synthetic_root, tmp_path):
    root, lines = make_affectnet_root(synthetic_root, tmp_path / "affectnet", rows=10)
    write_lists(root, lines[:7], lines[7:])
    images = root / layout.MANUAL_IMAGES_DIR
    absent = images / lines[0].split(",")[0]
    kept_aside = absent.read_bytes()
    absent.unlink()
    cfg = compose_config("preprocess", tmp_path / "work", [
        "dataset=affectnet", f"dataset.root={root}", "cache.size=32", "num_workers=0"])
    assert run_preprocess(cfg).skipped == {"missing_file": 1}
    assert run_preprocess(cfg).reused  # nothing changed: reused

    absent.write_bytes(kept_aside)  # the image is added
    with pytest.raises(CacheError, match="images added, removed or changed since.*overwrite=true"):
        run_preprocess(cfg)
    overwrite = cfg.copy()
    overwrite.overwrite = True
    rebuilt = run_preprocess(overwrite)
    assert rebuilt.faces_written == 10 and not rebuilt.skipped
    assert run_preprocess(cfg).reused

    changed = images / lines[1].split(",")[0]
    os.utime(changed, ns=(changed.stat().st_atime_ns, changed.stat().st_mtime_ns + 10**9))  # rewritten later
    with pytest.raises(CacheError, match="images added, removed or changed since"):
        run_preprocess(cfg)


def make_affectnet_root(synthetic_root: Path, root: Path, rows: int = 12) -> tuple[Path, list[str]]:
    """A small AffectNet copy of the synthetic set's first training rows; returns (root, data lines)."""
    lines = (synthetic_root / layout.MANUAL_LISTS_DIR / layout.TRAINING_CSV).read_text().splitlines()[1:]
    kept = [line for line in lines if line.split(",")[6] in {"0", "1", "2", "3", "6"}][:rows]
    images = root / layout.MANUAL_IMAGES_DIR
    for line in kept:
        relative = line.split(",")[0]
        (images / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(synthetic_root / layout.MANUAL_IMAGES_DIR / relative, images / relative)
    (root / layout.MANUAL_LISTS_DIR).mkdir(parents=True)
    return root, kept


def write_lists(root: Path, training: list[str], validation: list[str], validation_header: bool = True) -> None:
    lists = root / layout.MANUAL_LISTS_DIR
    (lists / layout.TRAINING_CSV).write_text("\n".join([HEADER, *training]) + "\n")
    (lists / layout.VALIDATION_CSV).write_text("\n".join(([HEADER] if validation_header else []) + validation) + "\n")


def with_path(line: str, relative: str) -> str:
    return ",".join([relative, *line.split(",")[1:]])


def test_missing_corrupt_escaping_and_bad_rows_are_skipped(synthetic_root, tmp_path):
    root, lines = make_affectnet_root(synthetic_root, tmp_path / "affectnet")
    corrupt = root / layout.MANUAL_IMAGES_DIR / "999" / "corrupt.jpg"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"\xff\xd8 this is not a JPEG")
    fields = lines[0].split(",")
    bad_box = ",".join([fields[0], "NULL", "NULL", "NULL", "NULL", *fields[5:]])
    negative = ",".join([*fields[:3], "-5", *fields[4:]])
    training = [*lines[:8], with_path(lines[0], "999/missing.jpg"), with_path(lines[0], "999/corrupt.jpg"),
                with_path(lines[0], "../../outside.jpg"), bad_box, negative]
    # validation.csv without its header line, as some copies of AffectNet have it.
    write_lists(root, training, lines[8:], validation_header=False)
    cfg = compose_config("preprocess", tmp_path / "work", [
        "dataset=affectnet", f"dataset.root={root}", "cache.size=32", "num_workers=2", "cache.chunk_rows=4"])
    summary = run_preprocess(cfg)
    report = pd.read_csv(summary.report_path)
    by_reason = report.groupby("reason")["row_id"].apply(list).to_dict()
    assert by_reason == {
        "missing_file": ["training.csv:10"],
        "unreadable_image": ["training.csv:11"],
        "outside_root": ["training.csv:12"],
        "bad_box": ["training.csv:13", "training.csv:14"],
    }
    assert summary.faces_written == len(lines)
    with FaceCache(cfg.cache.path) as cache:
        assert cache.split_size("test") == len(lines) - 8
        assert cache.split_size("train") + cache.split_size("val") == 8
        rows = cache.file["source_row"].asstr()[:].tolist()
        assert rows[-1] == f"validation.csv:{len(lines) - 8}"


def test_wrong_columns_stop_before_any_work(synthetic_root, tmp_path):
    root, lines = make_affectnet_root(synthetic_root, tmp_path / "affectnet", rows=3)
    write_lists(root, lines, lines)
    (root / layout.MANUAL_LISTS_DIR / layout.TRAINING_CSV).write_text("path,label\na.jpg,1\n")
    cfg = compose_config("preprocess", tmp_path / "work", ["dataset=affectnet", f"dataset.root={root}"])
    with pytest.raises(SourceError, match=r"training\.csv: expected columns subDirectory_filePath,.*found path,label"):
        run_preprocess(cfg)
    assert not Path(cfg.cache.path).parent.exists()


@pytest.mark.parametrize("content", ["", "\n"])
def test_empty_csv_is_refused(synthetic_root, tmp_path, content):
    root, lines = make_affectnet_root(synthetic_root, tmp_path / "affectnet", rows=3)
    write_lists(root, lines, lines)
    (root / layout.MANUAL_LISTS_DIR / layout.VALIDATION_CSV).write_text(content)
    cfg = compose_config("preprocess", tmp_path / "work", ["dataset=affectnet", f"dataset.root={root}"])
    with pytest.raises(SourceError, match=r"validation\.csv: empty file"):
        run_preprocess(cfg)


def test_missing_root_is_refused(tmp_path):
    cfg = compose_config("preprocess", tmp_path, ["dataset=affectnet", f"dataset.root={tmp_path / 'nowhere'}"])
    with pytest.raises(SourceError, match="dataset.root: .*nowhere does not exist"):
        run_preprocess(cfg)


def test_in_process_and_two_workers_write_identical_faces(synthetic_root, tmp_path):
    root, lines = make_affectnet_root(synthetic_root, tmp_path / "affectnet", rows=20)
    write_lists(root, lines[:14], lines[14:])
    faces = []
    for workers in (0, 2):
        cfg = compose_config("preprocess", tmp_path / f"work{workers}", [
            "dataset=affectnet", f"dataset.root={root}", "cache.size=40", "cache.color=rgb",
            f"num_workers={workers}", "cache.chunk_rows=3"])
        run_preprocess(cfg)
        with FaceCache(cfg.cache.path) as cache:
            faces.append(cache.faces[:])
    assert faces[0].shape == (20, 40, 40, 3)
    assert np.array_equal(faces[0], faces[1])


def test_reduced_decoding_stays_within_two_grey_levels(synthetic_root):
    lines = (synthetic_root / layout.MANUAL_LISTS_DIR / layout.TRAINING_CSV).read_text().splitlines()[1:40]
    differences, factors = [], []
    for line in lines:
        fields = line.split(",")
        path = str(synthetic_root / layout.MANUAL_IMAGES_DIR / fields[0])
        box = tuple(float(v) for v in fields[1:5])
        reduced = load_face(path, box, FaceSpec(size=32, reduced_decoding=True))
        full = load_face(path, box, FaceSpec(size=32, reduced_decoding=False))
        differences.append(np.abs(reduced.astype(float) - full.astype(float)).mean())
        factors.append(reduction_factor(box[2], box[3], 32))
    assert sum(factor > 1 for factor in factors) >= 10  # the boxes are large enough to decode reduced
    # ...and it was done: a reduced decode is close to the full one, never identical for all faces.
    assert sum(difference > 0 for difference in differences) >= 10
    assert np.mean(differences) <= 2.0


def test_box_leaving_the_image_is_clamped_or_padded():
    image = np.arange(100, dtype=np.uint8).reshape(10, 10)
    box = (-2.0, 6.0, 6.0, 6.0)  # x is the column: columns -2..3, rows 6..11
    clamped = crop_box(image, box, "clamp")
    assert clamped.shape == (4, 4) and clamped[0, 0] == image[6, 0]
    padded = crop_box(image, box, "pad")
    assert padded.shape == (6, 6) and padded[0, 2] == image[6, 0] and padded[0, 0] == image[6, 0]
    with pytest.raises(Exception, match="box_outside_image"):
        crop_box(image, (20.0, 20.0, 5.0, 5.0), "clamp")


def test_crop_uses_x_as_column(tmp_path):
    image = np.zeros((100, 200), dtype=np.uint8)
    image[10:30, 150:190] = 255  # a bright block 40 wide, 20 high, at column 150, row 10
    path = tmp_path / "wide.png"
    cv2.imwrite(str(path), image)
    face = load_face(str(path), (150.0, 10.0, 40.0, 20.0), FaceSpec(size=8, reduced_decoding=False))
    assert face.min() == 255


def test_killed_preprocess_resumes_to_an_identical_cache(synthetic_root, tmp_path, caplog):
    overrides = ["dataset=affectnet", f"dataset.root={synthetic_root}", "cache.size=32", "cache.chunk_rows=4",
                 "num_workers=1"]
    reference = compose_config("preprocess", tmp_path / "reference", overrides)
    run_preprocess(reference)

    cfg = compose_config("preprocess", tmp_path / "killed", overrides)
    parts = Path(cfg.cache.path + ".parts")
    repo = Path(__file__).resolve().parents[1]
    process = subprocess.Popen([sys.executable, "preprocess.py", f"paths.root={tmp_path / 'killed'}", *overrides],
                               cwd=repo, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if len(list(parts.glob("segment-*.h5"))) >= 2:  # some segments are complete
            break
        time.sleep(0.01)
    assert process.poll() is None, "preprocessing ended before it could be interrupted"
    workers = worker_pids(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not Path(cfg.cache.path).exists()
    assert workers and not wait_until_ended(workers), "worker processes outlived the killed preprocessing"

    with caplog.at_level(logging.INFO, logger="affectexp"):
        summary = run_preprocess(cfg)
    assert "Resuming" in caplog.text
    with FaceCache(cfg.cache.path) as resumed, FaceCache(reference.cache.path) as expected:
        assert np.array_equal(resumed.faces[:], expected.faces[:])
        for name in ("labels", "split", "source_row"):
            assert np.array_equal(resumed.file[name][:], expected.file[name][:])
    assert summary.skipped == pd.read_csv(report_path_of(Path(reference.cache.path)))["reason"].value_counts().to_dict()
    assert not parts.exists()


@pytest.mark.parametrize("header", [True, False])
def test_lists_read_in_chunks_keep_their_line_numbers(synthetic_root, tmp_path, monkeypatch, header):
    from affectexp.data.sources import affectnet

    root, lines = make_affectnet_root(synthetic_root, tmp_path / "affectnet", rows=11)
    write_lists(root, lines, lines[:3], validation_header=header)
    whole = affectnet.AffectNetSource("a", str(root)).read(landmarks=True).rows
    monkeypatch.setattr(affectnet, "CHUNK_LINES", 4)  # several chunks per list
    chunked = affectnet.AffectNetSource("a", str(root)).read(landmarks=True).rows
    pd.testing.assert_frame_equal(chunked, whole)
    first = 2 if header else 1
    assert chunked["row_id"].tolist()[-3:] == [f"validation.csv:{first + i}" for i in range(3)]
    assert chunked["landmarks"].str.count(";").eq(135).all()
