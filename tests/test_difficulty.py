"""dataset.difficulty: the hard synthetic set is reproducible and has the label noise and class
shares its config documents; the easy set is the original one, byte for byte; a folder holding
a set of another difficulty is refused."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate

from affectexp.data.affectnet_layout import MANUAL_LISTS_DIR, TRAINING_CSV, VALIDATION_CSV
from affectexp.data.synthetic import ensure_synthetic, generate_affectnet, render_face
from affectexp.data.synthetic.dataset import COMPLETE_MARKER, TRUTH_CSV, OtherDifficulty, image_path
from affectexp.data.synthetic.difficulty import PRESETS
from conftest import compose_config

REPO = Path(__file__).resolve().parents[1]

# AffectNet's manually annotated training set, faces per code 0-7 (neutral, happy, sad, surprise,
# fear, disgust, anger, contempt): the class shares the README documents for difficulty=hard.
AFFECTNET_MANUAL = (74874, 134415, 25459, 14090, 6378, 3803, 24882, 3750)
HARD_LABEL_NOISE = 0.12  # the README's documented share for difficulty=hard
# The confusable neighbour whose face a noisy row of each code shows (README: fear/surprise,
# disgust/anger, contempt/neutral, sad/neutral, happy/neutral; neutral's is sad).
NEIGHBOUR = {0: 2, 1: 0, 2: 0, 3: 4, 4: 3, 5: 6, 6: 5, 7: 0}

HARD_TRAIN_PER_CLASS, HARD_TEST_PER_CLASS, HARD_SEED = 25, 5, 3

# sha256 over the generator's lists and photos (every file but the dot-file markers, sorted by
# relative path, each path's UTF-8 bytes followed by the file's bytes) of
# generate_affectnet(root, 2, 1, seed=5, num_workers=1), as the generator wrote it before
# dataset.difficulty existed (measured at main 228a208).
EASY_DIGEST = "880e4d6c6844d4675366529146e3fafa9e7a199976193bb09ed27010fc6c47c5"
# That set's completion marker, as it was then: an easy set made before the knobs existed is
# still recognised as complete (not regenerated, and not taken for another difficulty).
EASY_MARKER = {"generator_version": 1, "train_per_class": 2, "test_per_class": 1, "seed": 5,
               "non_expression_fraction": 0.02}


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def lists_and_photos_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for rel, data in all_files(root).items():
        if not Path(rel).name.startswith("."):
            digest.update(rel.encode() + data)
    return digest.hexdigest()


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def synthetic_source(workspace: Path, root: Path, dataset: str, *overrides: str):
    """The synthetic source the preprocess config composes, as preprocess.py builds it."""
    cfg = compose_config("preprocess", workspace, [f"dataset={dataset}", f"dataset.root={root}", *overrides])
    return instantiate(cfg.dataset)


def hard_source(workspace: Path, root: Path, *overrides: str):
    return synthetic_source(workspace, root, "synthetic_hard", f"dataset.train_per_class={HARD_TRAIN_PER_CLASS}",
                            f"dataset.test_per_class={HARD_TEST_PER_CLASS}", f"dataset.seed={HARD_SEED}",
                            *overrides)


@pytest.fixture(scope="module")
def hard_set(tmp_path_factory) -> Path:
    """A hard set from dataset=synthetic_hard: 200 training rows of codes 0-7 (plus 4 of 8-10),
    40 validation rows."""
    workspace = tmp_path_factory.mktemp("hard")
    source = hard_source(workspace, workspace / "data", "+dataset.num_workers=1")
    source.prepare()
    return source.root


def noisy_rows(root: Path, csv_name: str) -> tuple[Counter, Counter]:
    """(rows per label code, rows whose photo shows another expression per label code) of one
    list, the drawn expression read from the truth list."""
    truth = {r["subDirectory_filePath"]: r for r in read_csv(root / TRUTH_CSV)}
    rows, noisy = Counter(), Counter()
    for row in read_csv(root / MANUAL_LISTS_DIR / csv_name):
        label = int(row["expression"])
        seen = truth[row["subDirectory_filePath"]]
        assert int(seen["expression"]) == label
        drawn = int(seen["drawn_expression"])
        rows[label] += 1
        if drawn != label:
            assert label < 8 and drawn == NEIGHBOUR[label], row["subDirectory_filePath"]
            noisy[label] += 1
    return rows, noisy


def test_hard_set_is_byte_identical_for_the_same_seed(hard_set, tmp_path):
    again = hard_source(tmp_path, tmp_path / "again", "+dataset.num_workers=2")
    again.prepare()
    first, second = all_files(hard_set), all_files(again.root)
    assert TRUTH_CSV in first and sum(rel.endswith(".jpg") for rel in first) == 8 * 25 + 4 + 8 * 5
    assert second == first


def test_hard_training_list_has_affectnets_class_shares(hard_set):
    counts = Counter(int(r["expression"]) for r in read_csv(hard_set / MANUAL_LISTS_DIR / TRAINING_CSV))
    total = 8 * HARD_TRAIN_PER_CLASS
    assert sum(counts[c] for c in range(8)) == total
    # The counts are planned, not sampled: rounding to whole rows is the only deviation allowed.
    expected = np.array(AFFECTNET_MANUAL) / sum(AFFECTNET_MANUAL) * total
    assert np.abs(np.array([counts[c] for c in range(8)]) - expected).max() < 1.0, counts
    assert counts[1] > 10 * counts[7]  # happy dominates, contempt is rare, as in AffectNet
    validation = Counter(int(r["expression"]) for r in read_csv(hard_set / MANUAL_LISTS_DIR / VALIDATION_CSV))
    assert validation == {c: HARD_TEST_PER_CLASS for c in range(8)}  # balanced, as AffectNet's


@pytest.mark.parametrize("csv_name", [TRAINING_CSV, VALIDATION_CSV])
def test_hard_label_noise_share_matches_the_documented_one(hard_set, csv_name):
    rows, noisy = noisy_rows(hard_set, csv_name)
    # Every class gets round(share * its rows) noisy rows: at most half a row off per class.
    for code in range(8):
        assert abs(noisy[code] - HARD_LABEL_NOISE * rows[code]) <= 0.5, (code, rows[code], noisy[code])
    assert sum(noisy.values()) > 0


def test_realism_override_sets_the_label_noise_share(tmp_path):
    source = hard_source(tmp_path, tmp_path / "data", "+dataset.realism.label_noise=0.4",
                         "dataset.train_per_class=10", "dataset.test_per_class=5", "+dataset.num_workers=1")
    source.prepare()
    rows, noisy = noisy_rows(source.root, TRAINING_CSV)
    for code in range(8):
        assert abs(noisy[code] - 0.4 * rows[code]) <= 0.5, (code, rows[code], noisy[code])
    assert json.loads((source.root / COMPLETE_MARKER).read_text())["difficulty"]["label_noise"] == 0.4


def test_a_noisy_rows_photo_shows_the_drawn_expression(hard_set):
    """The truth list is what the photos show: a noisy row's list entry (box, valence, arousal)
    is the face drawn with the neighbour's code, not with its label's."""
    truth = {r["subDirectory_filePath"]: int(r["drawn_expression"]) for r in read_csv(hard_set / TRUTH_CSV)}
    checked = 0
    for index, row in enumerate(read_csv(hard_set / MANUAL_LISTS_DIR / TRAINING_CSV)):
        assert row["subDirectory_filePath"] == image_path(HARD_SEED, 0, index)
        label, drawn = int(row["expression"]), truth[row["subDirectory_filePath"]]
        if drawn == label:
            continue
        listed = (float(row["valence"]), float(row["arousal"]))
        faces = {code: render_face(np.random.default_rng([HARD_SEED, 0, index]), code, difficulty=PRESETS["hard"])
                 for code in (label, drawn)}
        assert listed == pytest.approx((faces[drawn].valence, faces[drawn].arousal), abs=1e-6)
        assert listed != pytest.approx((faces[label].valence, faces[label].arousal), abs=1e-6)
        checked += 1
        if checked == 4:
            break
    assert checked == 4


def test_easy_set_is_the_original_byte_for_byte(tmp_path):
    generate_affectnet(tmp_path / "direct", 2, 1, seed=5, num_workers=1)
    assert lists_and_photos_digest(tmp_path / "direct") == EASY_DIGEST
    assert json.loads((tmp_path / "direct" / COMPLETE_MARKER).read_text()) == EASY_MARKER
    assert not (tmp_path / "direct" / TRUTH_CSV).exists()

    # The default config (difficulty easy) generates the same set.
    source = synthetic_source(tmp_path, tmp_path / "configured", "synthetic", "dataset.train_per_class=2",
                              "dataset.test_per_class=1", "dataset.seed=5", "+dataset.num_workers=1")
    source.prepare()
    assert all_files(source.root) == all_files(tmp_path / "direct")


def test_a_set_of_another_difficulty_is_refused_and_kept(tmp_path):
    root = tmp_path / "data"
    ensure_synthetic(root, 1, 1, seed=0, num_workers=1)
    before = all_files(root)
    with pytest.raises(OtherDifficulty) as raised:
        ensure_synthetic(root, 1, 1, seed=0, num_workers=1, difficulty=PRESETS["hard"])
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"dataset.root: {root} holds a synthetic set made at another difficulty (easy); ")
    assert all_files(root) == before

    # From the entry point: one line, exit status 1, nothing replaced.
    done = subprocess.run([sys.executable, "preprocess.py", f"paths.root={tmp_path / 'work'}", "dataset=synthetic_hard",
                           f"dataset.root={root}", "dataset.train_per_class=1", "dataset.test_per_class=1",
                           "+dataset.num_workers=1"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    output = (done.stdout + done.stderr).strip().splitlines()
    assert len(output) == 1 and f"dataset.root: {root} holds a synthetic set made at another difficulty" in output[0], output
    assert all_files(root) == before

    # And the other way round: an easy run pointed at a hard set's folder.
    hard_root = tmp_path / "hard"
    ensure_synthetic(hard_root, 1, 1, seed=0, num_workers=1, difficulty=PRESETS["hard"])
    hard_before = all_files(hard_root)
    with pytest.raises(OtherDifficulty, match=r"dataset.root: .* another difficulty \(hard\); "):
        ensure_synthetic(hard_root, 1, 1, seed=0, num_workers=1)
    assert all_files(hard_root) == hard_before
