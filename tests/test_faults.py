"""Faults a user meets on the data side, each one line naming the file or key, as the entry
points print it: bad config values, unreadable files, full disks, two writers, Ctrl-C."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


REPOSITORY = Path(__file__).resolve().parents[1]
ENTRY_TIMEOUT_S = 300


def entry_command(script: str, args: list[str]) -> list[str]:
    return [sys.executable, script, *args]


def run_entry(script: str, args: list[str], command: list[str] | None = None) -> subprocess.CompletedProcess:
    """Run an entry point as a user would, from the repository root; stdout and stderr as text."""
    return subprocess.run(command or entry_command(script, args), cwd=REPOSITORY, capture_output=True, text=True,
                          timeout=ENTRY_TIMEOUT_S)


def the_error_line(result: subprocess.CompletedProcess, status: int = 1) -> str:
    """The one ERROR line of a run that failed with `status`, after checking there is no traceback."""
    output = result.stdout + (result.stderr or "")
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1, output
    assert result.returncode == status, output
    return errors[0]


def preprocess_args(root: Path, work: Path, *extra: str) -> list[str]:
    return [f"paths.root={work}", "dataset=affectnet", f"dataset.root={root}", "cache.size=32", *extra]


@pytest.mark.parametrize("override, key", [
    ("cache.size=0", "cache.size"),
    ("cache.chunk_rows=0", "cache.chunk_rows"),
    ("split.val_fraction=1.5", "split.val_fraction"),
    ("faces.margin=-0.6", "faces.margin"),
])
def test_out_of_range_values_stop_in_one_line_naming_the_key(synthetic_root, tmp_path, override, key):
    result = run_entry("preprocess.py", preprocess_args(synthetic_root, tmp_path, override))
    line = the_error_line(result)
    assert f"{key}: {override.split('=')[1]}; it must be" in line
    assert not (tmp_path / "caches").exists()


def test_missing_dataset_root_names_the_key(tmp_path):
    result = run_entry("preprocess.py", [f"paths.root={tmp_path}", "dataset=affectnet"])
    assert "dataset.root: no value given; pass dataset.root=... on the command line" in the_error_line(result)
