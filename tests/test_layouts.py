"""AffectNet as users have it on disk: the CSV dialects of its lists."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from affectexp.data import affectnet_layout as layout
from affectexp.data.preprocess import run_preprocess
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
