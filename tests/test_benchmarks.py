"""The benchmark scripts run end to end on this machine: every case, real subprocesses, tiny sizes.

Their figures are not checked (they are measurements); that each case ran and gave one is.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import device  # noqa: E402  (benchmarks/device.py)
import train_input  # noqa: E402  (benchmarks/train_input.py)


def run_script(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=1500,
                            env=None if env is None else {**os.environ, **env})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_process_counts_run_from_one_to_every_core():
    assert train_input.process_counts(1) == [1]
    assert train_input.process_counts(2) == [1, 2]
    assert train_input.process_counts(6) == [1, 2, 4, 6]
    assert train_input.process_counts(16) == [1, 2, 4, 8, 16]


def test_without_augmentation_only_other_counts_of_reader_threads_are_cases():
    cases = train_input.pipeline_cases(["none", "strong"], [1, 2, 4, 8])
    # 1 and 2 processes both mean 2 reader threads (CacheBatches: max(2, processes)).
    assert cases == [("none", 1), ("none", 4), ("none", 8), ("strong", 1), ("strong", 2), ("strong", 4), ("strong", 8)]


def test_device_cases_run_the_baseline_first_and_xla_last():
    cases = device.training_cases(device.SHAPES, device.PRECISIONS)
    assert len(cases) == len(device.SHAPES) * 4 == len(set(cases))
    assert [case[3:] for case in cases[::len(device.SHAPES)]] == [
        ("float32", False), ("mixed_float16", False), ("mixed_float16", True), ("float32", True)]


@pytest.mark.slow
def test_no_model_mode_measures_every_case(tmp_path):
    result = run_script(str(REPO / "benchmarks/train_input.py"), "--no-model", "--sizes", "32", "--colors", "gray", "rgb",
                        "--augmentations", "none", "light", "--processes", "1", "2", "--rounds", "2",
                        "--seconds", "0.05", "--train-per-class", "60", cwd=tmp_path)
    rows = [line.split() for line in result.stdout.splitlines() if line.strip().startswith("32 ")]
    # px, colour, augmentation, processes (0: none started), reader threads, faces/s, x fewest, CPU ms, rounds
    assert [row[:5] for row in rows] == [["32", "gray", "none", "0", "2"], ["32", "gray", "light", "1", "2"],
                                         ["32", "gray", "light", "2", "2"], ["32", "rgb", "none", "0", "2"],
                                         ["32", "rgb", "light", "1", "2"], ["32", "rgb", "light", "2", "2"]]
    for row in rows:
        assert float(row[5]) > 0 and row[6].endswith("x") and float(row[7]) > 0 and len(row[8:]) == 2
    assert {row[6] for row in rows if row[3] in ("0", "1")} == {"1.00x"}


# Imported first by every Python process started with this folder on PYTHONPATH (the script,
# preprocess.py, the augmenting processes): TensorFlow cannot be imported there, as on a GPU
# machine whose environment has JAX and no TensorFlow.
NO_TENSORFLOW = """
import sys

class NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "tensorflow":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoTensorFlow())
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_device_script_quick_runs_every_case_of_a_model_on_cpu(tmp_path, backend):
    # One model (the cheapest) keeps it to minutes on a CPU: every feed, precision and XLA case of it.
    env = {"KERAS_BACKEND": backend}
    if backend == "jax":
        (tmp_path / "no-tensorflow").mkdir()
        (tmp_path / "no-tensorflow" / "sitecustomize.py").write_text(NO_TENSORFLOW)
        env["PYTHONPATH"] = str(tmp_path / "no-tensorflow")
    out = tmp_path / "rows.json"
    result = run_script(str(REPO / "benchmarks/device.py"), "--quick", "--models", "simple_cnn", "--budget", "100000",
                        "--out", str(out), cwd=tmp_path, env=env)
    assert "nvidia-smi not found" in result.stdout and f" on {backend}; " in result.stdout
    rows = json.loads(out.read_text())
    training = [row for row in rows if not row.get("ceiling")]
    shapes = [shape for shape in device.SHAPES if shape[0] == "simple_cnn"]
    expected = {(model, device.QUICK_SIZE, color, feed, precision, jit)
                for model, _, color, precision, jit in device.training_cases(shapes, device.PRECISIONS)
                for feed in device.FEEDS}
    assert len(expected) == 4 * 4  # 2 precisions x with and without XLA, 4 feeds
    assert {(r["model"], r["px"], r["color"], r["feed"], r["precision"], r["jit"]) for r in training} == expected
    assert len(training) == len(expected)
    for row in training:
        assert row["note"] == f"{device.train_input.SKIP_STEPS + 2} steps" and row["images_per_s"] > 0, row
        assert (row["ratio_to_a"] is None) == (row["feed"] == "a"), row
    printed = [line for line in result.stdout.splitlines() if line.startswith("| ") and "images/s" not in line]
    assert len(printed) == len(expected)
    ceiling = [row for row in rows if row.get("ceiling") and not row.get("on_device")]
    assert {(row["px"], row["color"], row["augmentation"]) for row in ceiling} == {
        (device.QUICK_SIZE, "gray", augmentation) for augmentation in ("none", "strong")}
    augmentation_alone = [row for row in rows if row.get("on_device")]
    assert [(row["px"], row["color"]) for row in augmentation_alone] == [(device.QUICK_SIZE, "gray")]
    assert all(row["faces_per_s"] > 0 for row in ceiling + augmentation_alone)


@pytest.mark.slow
def test_device_script_skips_what_the_time_budget_leaves_no_room_for(tmp_path):
    out = tmp_path / "rows.json"
    result = run_script(str(REPO / "benchmarks/device.py"), "--quick", "--budget", "0", "--out", str(out),
                        cwd=tmp_path)
    cases = device.training_cases(device.SHAPES, device.PRECISIONS)
    assert f"skipped {len(cases)} of {len(cases)} model groups: the time budget (0 s) was spent" in result.stdout
    rows = json.loads(out.read_text())
    training = [row for row in rows if not row.get("ceiling")]
    assert len(training) == len(device.FEEDS) * len(cases)
    assert all(row["note"] == "skipped: time budget spent" and row["images_per_s"] is None for row in training)
    assert any(row.get("ceiling") and row["faces_per_s"] for row in rows)  # the ceiling is measured still (one round)
    assert all(row["faces_per_s"] is None for row in rows if row.get("on_device"))
