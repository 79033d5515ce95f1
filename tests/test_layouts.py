"""AffectNet as users have it on disk: the folder layouts archives leave, and the CSV dialects of its lists."""

from __future__ import annotations

import csv
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from affectexp.data import affectnet_layout as layout
from affectexp.data.cache import CacheError, FaceCache
from affectexp.tasks.preprocess import run_preprocess
from affectexp.data.sources.rows import SourceError
from conftest import compose_config

LISTS = layout.MANUAL_LISTS_DIR
IMAGES = layout.MANUAL_IMAGES_DIR


@pytest.fixture(scope="module")
def canonical(tmp_path_factory) -> Path:
    """A tiny synthetic AffectNet in the canonical layout: 19 training rows, 8 validation rows."""
    from affectexp.data.synthetic import generate_affectnet

    root = tmp_path_factory.mktemp("canonical")
    generate_affectnet(root, train_per_class=2, test_per_class=1, seed=3, num_workers=1)
    return root


def build(root: Path, work: Path, overrides: list[str] = ()):
    """(summary, config) of run_preprocess on the AffectNet at `root`, 16 px, all 8 classes."""
    cfg = compose_config("preprocess", work, [
        "dataset=affectnet", f"dataset.root={root}", "classes=affectnet8", "cache.size=16", "num_workers=0",
        *overrides])
    return run_preprocess(cfg), cfg


def datasets(cache_path) -> dict[str, np.ndarray]:
    """Every dataset of a cache file, read whole: what "the same cache bytes" compares."""
    with h5py.File(cache_path, "r") as cache:
        return {name: cache[name][:] for name in cache}


def assert_same_cache(cache_path, expected: dict[str, np.ndarray]) -> None:
    found = datasets(cache_path)
    assert sorted(found) == sorted(expected)
    for name, values in expected.items():
        assert found[name].dtype == values.dtype and np.array_equal(found[name], values), name


@pytest.fixture(scope="module")
def reference(canonical, tmp_path_factory) -> dict[str, np.ndarray]:
    """The datasets of the cache built from the canonical layout."""
    summary, _ = build(canonical, tmp_path_factory.mktemp("reference"))
    assert summary.skipped == {"non_expression": 3}
    return datasets(summary.cache_path)


def arrange(canonical: Path, root: Path, lists: str, images: str,
            names: tuple[str, ...] = (layout.TRAINING_CSV, layout.VALIDATION_CSV)) -> Path:
    """The canonical set's lists copied into root/lists (under `names`: training's rows first,
    then validation's) and its images folder into root/images."""
    for source, name in zip((layout.TRAINING_CSV, layout.VALIDATION_CSV), names):
        (root / lists).mkdir(parents=True, exist_ok=True)
        shutil.copy(canonical / LISTS / source, root / lists / name)
    shutil.copytree(canonical / IMAGES, root / images, dirs_exist_ok=True)  # lists may be inside it
    return root


# (lists folder, images folder[, list file names]) of the manual set as users have it.
MANUAL_LAYOUTS = {
    "canonical": (LISTS, IMAGES),
    "images_in_a_set_folder": (LISTS, "Manually_Annotated/Manually_Annotated_Images"),
    "extracted_lower_case": ("manually_annotated_file_lists", "Manually_Annotated_extracted"),
    "nested_in_themselves": (f"{LISTS}/{LISTS}", f"{IMAGES}/{IMAGES}"),
    "spaces": ("Manually Annotated file lists", "Manually Annotated"),
    "lists_beside_images": ("Manually_Annotated", "Manually_Annotated"),
    "lists_above_images": (".", "Manually_Annotated"),
    "lists_below_images": (f"{IMAGES}/file_lists", IMAGES),
    "deep_archive": ("Manually_Annotated_extracted/Manually_Annotated/Manually_Annotated_file_list",
                     "Manually_Annotated_extracted/Manually_Annotated/Manually_Annotated_Images/Manually_Annotated_Images"),
    "case_of_files": ("MANUALLY_ANNOTATED_FILE_LISTS", IMAGES, ("Training.csv", "VALIDATION.CSV")),
}


@pytest.mark.parametrize("name", sorted(MANUAL_LAYOUTS))
def test_every_manual_layout_gives_the_canonical_cache(canonical, reference, tmp_path, caplog, name):
    lists, images, *names = MANUAL_LAYOUTS[name]
    root = arrange(canonical, tmp_path / "affectnet", lists, images, *names)
    with caplog.at_level(logging.INFO, logger="affectexp"):
        summary, cfg = build(root, tmp_path / "work")
    assert_same_cache(summary.cache_path, reference)
    # What was read is logged and recorded as the keys that would name it.
    with FaceCache(summary.cache_path) as cache:
        recorded = cache.attr("config")["dataset"]
    assert recorded["lists"]["manual"] == str(Path(lists))
    assert recorded["images"]["manual"] == str(Path(images))
    assert f"images {root / images}" in caplog.text


# The automatic set's layouts: the issue's and the seed notebook's (automatically_annotated.csv
# beside an Automatically_Annotated folder).
AUTOMATIC_LAYOUTS = {
    "canonical": (layout.AUTOMATIC_LISTS_DIR, layout.AUTOMATIC_IMAGES_DIR),
    "singular_nested": ("Automatically_annotated_file_list/Automatically_annotated_file_list",
                        f"{layout.AUTOMATIC_IMAGES_DIR}/{layout.AUTOMATIC_IMAGES_DIR}"),
    "list_inside_images": ("Automatically_Annotated", "Automatically_Annotated"),
    "notebook": (".", "Automatically_Annotated"),
    "spaces": ("Automatically Annotated", "Automatically Annotated/Automatically Annotated Images"),
}


@pytest.fixture(scope="module")
def automatic_reference(canonical, tmp_path_factory):
    lists, images = AUTOMATIC_LAYOUTS["canonical"]
    root = arrange(canonical, tmp_path_factory.mktemp("automatic") / "affectnet", lists, images, (layout.AUTOMATIC_CSV,))
    summary, _ = build(root, tmp_path_factory.mktemp("work"), ["dataset.sets=[automatic]"])
    return datasets(summary.cache_path)


@pytest.mark.parametrize("name", sorted(AUTOMATIC_LAYOUTS))
def test_every_automatic_layout_gives_the_same_cache(canonical, automatic_reference, tmp_path, name):
    lists, images = AUTOMATIC_LAYOUTS[name]
    root = arrange(canonical, tmp_path / "affectnet", lists, images, (layout.AUTOMATIC_CSV,))
    summary, _ = build(root, tmp_path / "work", ["dataset.sets=[automatic]"])
    assert_same_cache(summary.cache_path, automatic_reference)


def test_both_sets_are_each_paired_with_their_own_images(canonical, tmp_path):
    from affectexp.data.synthetic import generate_affectnet

    other = tmp_path / "other"  # another seed: other file names, so each set's files are only in its folder
    generate_affectnet(other, train_per_class=1, test_per_class=1, seed=4, num_workers=1)
    root = arrange(canonical, tmp_path / "affectnet", "Manually_Annotated", "Manually_Annotated")
    arrange(other, root, "Automatically_annotated_file_list", "Automatically_Annotated_Images", (layout.AUTOMATIC_CSV,))
    summary, _ = build(root, tmp_path / "work", ["dataset.sets=[manual,automatic]"])
    assert summary.skipped == {"non_expression": 6}
    assert summary.rows_read == 27 + 11
    with FaceCache(summary.cache_path) as cache:
        recorded = cache.attr("config")["dataset"]
    assert recorded["lists"] == {"manual": "Manually_Annotated", "automatic": "Automatically_annotated_file_list"}
    assert recorded["images"] == {"manual": "Manually_Annotated", "automatic": "Automatically_Annotated_Images"}


def ambiguous_root(canonical: Path, root: Path) -> Path:
    """The canonical layout plus a second, unpacked copy of the images: rows resolve in both."""
    arrange(canonical, root, LISTS, IMAGES)
    shutil.copytree(canonical / IMAGES, root / "Manually_Annotated_extracted" / IMAGES)
    return root


def test_ambiguous_images_stop_with_one_line_naming_both(canonical, reference, tmp_path):
    root = ambiguous_root(canonical, tmp_path / "affectnet")
    with pytest.raises(SourceError) as raised:
        build(root, tmp_path / "work")
    message = str(raised.value)
    assert "\n" not in message and "manual set is ambiguous" in message
    assert f"images {IMAGES}," in message and f"images Manually_Annotated_extracted/{IMAGES}" in message
    assert "dataset.lists.manual=" in message and "dataset.images.manual=" in message
    assert not (tmp_path / "work" / "caches").exists()  # stopped before any work
    # Two paths settle it.
    chosen = [f"dataset.lists.manual={LISTS}", f"dataset.images.manual=Manually_Annotated_extracted/{IMAGES}"]
    summary, _ = build(root, tmp_path / "work", chosen)
    assert_same_cache(summary.cache_path, reference)


def test_ambiguous_layout_is_one_line_and_exit_status_1_from_the_entry_point(canonical, tmp_path):
    root = ambiguous_root(canonical, tmp_path / "affectnet")
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "preprocess.py", f"paths.root={tmp_path / 'work'}", "dataset=affectnet",
                           f"dataset.root={root}"], cwd=repo, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    output = (done.stdout + done.stderr).strip().splitlines()
    assert len(output) == 1 and "manual set is ambiguous" in output[0], output


@pytest.mark.parametrize("missing", ["images", "lists"])
def test_missing_set_stops_with_one_line_naming_what_was_found(canonical, tmp_path, missing):
    root = arrange(canonical, tmp_path / "affectnet", LISTS, IMAGES)
    if missing == "images":
        shutil.rmtree(root / IMAGES)
        (root / IMAGES).mkdir()  # unpacked elsewhere, or not yet
    else:
        shutil.rmtree(root / LISTS)
        (root / "notes.csv").write_text("a,b\n")
    with pytest.raises(SourceError) as raised:
        build(root, tmp_path / "work")
    message = str(raised.value)
    assert "\n" not in message and "manual set not found: looked for training.csv, validation.csv" in message
    assert "dataset.lists.manual=" in message and "dataset.images.manual=" in message
    if missing == "images":
        assert f"lists in: {LISTS};" in message and f"image folders: {IMAGES} (0 of 27 files found)" in message
    else:
        assert "lists in: none;" in message and f"image folders: {IMAGES};" in message
        assert "CSV files: notes.csv;" in message


def test_images_given_where_the_lists_files_are_not_is_refused(canonical, tmp_path):
    root = arrange(canonical, tmp_path / "affectnet", LISTS, IMAGES)
    with pytest.raises(SourceError, match=rf"image folders: {LISTS} \(0 of 27 files found\)"):
        build(root, tmp_path / "work", [f"dataset.images.manual={LISTS}"])
    with pytest.raises(SourceError, match=r"dataset.lists.manual=nowhere: .*nowhere is not a folder"):
        build(root, tmp_path / "work", ["dataset.lists.manual=nowhere"])


def test_recorded_folders_are_in_the_fingerprint(canonical, tmp_path):
    root = arrange(canonical, tmp_path / "affectnet", LISTS, IMAGES)
    summary, cfg = build(root, tmp_path / "work")
    with FaceCache(summary.cache_path) as cache:
        recorded = cache.attr("config")["dataset"]
    # The recorded values, given back as overrides, name the same inputs: the cache is reused.
    given = [f"dataset.lists.manual={recorded['lists']['manual']}", f"dataset.images.manual={recorded['images']['manual']}"]
    assert build(root, tmp_path / "work", given)[0].reused
    # The same images with the lists moved: other inputs, so the cache is not silently reused.
    shutil.move(root / LISTS, root / "elsewhere")
    with pytest.raises(CacheError, match="built from other inputs"):
        build(root, tmp_path / "work")


def copy_root(canonical: Path, root: Path) -> Path:
    shutil.copytree(canonical, root)
    return root


def read_list(path: Path) -> list[list[str]]:
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


def write_list(path: Path, records: list[list[str]], encoding: str = "utf-8", quoting: int = csv.QUOTE_MINIMAL,
               line_end: str = "\n") -> None:
    with open(path, "w", encoding=encoding, newline="") as handle:
        csv.writer(handle, quoting=quoting, lineterminator=line_end).writerows(records)


def expression_rows(records: list[list[str]]) -> list[int]:
    """Indices of the data records whose expression is 0-7 (rows that become faces)."""
    return [i for i, record in enumerate(records[1:], start=1) if int(record[6]) < 8]


# Dialects of the same lists: every field in quotes (the header too), a UTF-8 byte-order mark,
# Windows line endings.
DIALECTS = {
    "quoted": {"quoting": csv.QUOTE_ALL},
    "bom": {"encoding": "utf-8-sig"},
    "crlf": {"line_end": "\r\n"},
}


@pytest.mark.parametrize("dialect", sorted(DIALECTS))
def test_lists_are_read_as_csv(canonical, reference, tmp_path, dialect):
    root = copy_root(canonical, tmp_path / "affectnet")
    for name in (layout.TRAINING_CSV, layout.VALIDATION_CSV):
        write_list(root / LISTS / name, read_list(canonical / LISTS / name), **DIALECTS[dialect])
    if dialect == "quoted":
        assert (root / LISTS / layout.TRAINING_CSV).read_text().startswith('"subDirectory_filePath","face_x"')
    summary, _ = build(root, tmp_path / "work")
    assert summary.skipped == {"non_expression": 3}
    assert_same_cache(summary.cache_path, reference)


def test_absolute_paths_inside_the_root_are_read_outside_it_refused(canonical, tmp_path):
    root = copy_root(canonical, tmp_path / "affectnet")
    records = read_list(root / LISTS / layout.TRAINING_CSV)
    inside, outside = expression_rows(records)[:2]  # record i is on line i + 1
    records[inside][0] = str(root / IMAGES / records[inside][0])
    elsewhere = tmp_path / "elsewhere" / records[outside][0]
    elsewhere.parent.mkdir(parents=True)
    shutil.copy(root / IMAGES / records[outside][0], elsewhere)
    records[outside][0] = str(elsewhere)
    write_list(root / LISTS / layout.TRAINING_CSV, records)
    summary, cfg = build(root, tmp_path / "work")
    report = pd.read_csv(summary.report_path)
    assert report.loc[report["row_id"] == f"training.csv:{outside + 1}", "reason"].tolist() == ["outside_root"]
    assert f"training.csv:{inside + 1}" not in set(report["row_id"])
    with h5py.File(cfg.cache.path, "r") as cache:
        assert f"training.csv:{inside + 1}" in cache["source_row"].asstr()[:].tolist()


def test_a_row_that_is_not_text_is_reported_and_a_list_that_is_not_text_is_named(canonical, tmp_path):
    root = copy_root(canonical, tmp_path / "affectnet")
    training = root / LISTS / layout.TRAINING_CSV
    records = read_list(training)
    latin1 = expression_rows(records)[0]
    records[latin1][0] += "MARK"  # a Latin-1 e with an accent in its path
    write_list(training, records)
    training.write_bytes(training.read_bytes().replace(b"MARK", b"\xe9"))
    summary, _ = build(root, tmp_path / "work")
    report = pd.read_csv(summary.report_path)
    assert report.loc[report["reason"] == "not_text", "row_id"].tolist() == [f"training.csv:{latin1 + 1}"]
    assert summary.skipped["not_text"] == 1 and sum(summary.written["train"].values()) > 0

    training.write_bytes(bytes(range(256)) * 4)  # not text at all
    with pytest.raises(SourceError, match=rf"^{training}: line 1 is not UTF-8 text .*; save the list as UTF-8"):
        build(root, tmp_path / "work", ["overwrite=true"])


def test_rows_with_too_few_or_too_many_fields_are_malformed(canonical, tmp_path):
    root = copy_root(canonical, tmp_path / "affectnet")
    records = read_list(root / LISTS / layout.TRAINING_CSV)
    short, long = expression_rows(records)[:2]
    records[short] = records[short][:4]  # path and box only
    records[long] = [*records[long], "extra"]
    write_list(root / LISTS / layout.TRAINING_CSV, records)
    summary, _ = build(root, tmp_path / "work")
    report = pd.read_csv(summary.report_path)
    malformed = report.loc[report["reason"] == "malformed_row", "row_id"].tolist()
    assert malformed == [f"training.csv:{short + 1}", f"training.csv:{long + 1}"]
    assert "bad_expression" not in summary.skipped
