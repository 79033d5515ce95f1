"""Faults a user meets on the data side, each one line naming the file or key, as the entry
points print it: bad config values, unreadable files, full disks, two writers, Ctrl-C."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from affectexp.data import affectnet_layout as layout
from affectexp.data.cache import CacheError, FaceCache
from affectexp.tasks.preprocess import run_preprocess
from affectexp.errors import INTERRUPTED_STATUS
from affectexp.locks import lock_path_of
from conftest import compose_config, default_ctrl_c, wait_until_ended, worker_pids

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


def cache_path_of(work: Path, size: int = 32) -> Path:
    return work / "caches" / f"affectnet-gray{size}-basic5.h5"


def leftovers(folder: Path) -> list[Path]:
    """Files of an unfinished write under `folder`."""
    return [*folder.rglob("*.tmp"), *folder.rglob("*.partial")]


def wait_for(condition, process: subprocess.Popen, seconds: float = 120.0) -> None:
    """Poll `condition` until it holds; fails if `process` ends first or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, "the process ended before the moment the test waits for"
        assert time.monotonic() < deadline, "the moment the test waits for never came"
        time.sleep(0.005)


@contextlib.contextmanager
def mounted_tmpfs(folder: Path, options: str):
    """A tmpfs at `folder` for the with block; skips the test where mounting is not permitted."""
    folder.mkdir(parents=True, exist_ok=True)
    mount = shutil.which("mount")
    result = subprocess.run([mount, "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True,
                            text=True) if mount else None
    if result is None or result.returncode != 0:
        pytest.skip(f"mounting a tmpfs is not permitted here ({result.stderr.strip() if result else 'no mount'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


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


def copy_lists(synthetic_root: Path, root: Path) -> Path:
    """An AffectNet folder with the synthetic set's lists and no images; returns its images folder."""
    shutil.copytree(synthetic_root / layout.MANUAL_LISTS_DIR, root / layout.MANUAL_LISTS_DIR)
    return root / layout.MANUAL_IMAGES_DIR


def test_no_training_face_is_an_error_and_the_images_added_later_are_used(synthetic_root, tmp_path):
    root = tmp_path / "affectnet"
    images = copy_lists(synthetic_root, root)
    work = tmp_path / "work"
    # Without an images folder the layout check refuses before any work, naming the override.
    line = the_error_line(run_entry("preprocess.py", preprocess_args(root, work, "num_workers=0")))
    assert "dataset.images" in line and not (work / "caches").exists()
    # Every image present but empty (an interrupted copy): nothing can be cropped.
    shutil.copytree(synthetic_root / layout.MANUAL_IMAGES_DIR, images)
    for image in images.rglob("*.jpg"):
        image.write_bytes(b"")
    line = the_error_line(run_entry("preprocess.py", preprocess_args(root, work, "num_workers=0")))
    report = cache_path_of(work).with_name("affectnet-gray32-basic5.skipped.csv")
    assert "no training face could be cropped" in line and f"see the skipped-row report {report}" in line
    assert "main reasons rows were skipped: unreadable_image" in line
    assert sorted(p.name for p in (work / "caches").iterdir()) == [report.name]  # no cache, no segments

    shutil.copytree(synthetic_root / layout.MANUAL_IMAGES_DIR, images, dirs_exist_ok=True)
    cfg = compose_config("preprocess", work, preprocess_args(root, work, "num_workers=0")[1:])
    summary = run_preprocess(cfg)
    assert not summary.reused and sum(summary.written["train"].values()) > 0


def test_unreadable_cache_in_train_py_names_the_file(built_cache, tmp_path):
    cache = tmp_path / "truncated.h5"
    shutil.copy(built_cache[1].cache.path, cache)
    os.truncate(cache, cache.stat().st_size // 2)  # as an interrupted copy leaves it
    result = run_entry("train.py", [f"paths.root={tmp_path}", f"cache.path={cache}", "cache.size=48"])
    line = the_error_line(result)
    assert f"cache.path: {cache} cannot be read as a cache (truncated" in line
    assert "rebuild it with preprocess.py and overwrite=true" in line


def test_a_file_that_is_no_cache_is_named(tmp_path):
    not_hdf5 = tmp_path / "notes.h5"
    not_hdf5.write_text("not a cache")
    with pytest.raises(CacheError, match=f"cache.path: {not_hdf5} cannot be read as a cache \\(not an HDF5 file\\)"):
        FaceCache(not_hdf5)
    other_hdf5 = tmp_path / "other.h5"
    with h5py.File(other_hdf5, "w") as file:
        file["x"] = np.zeros(3)
    with pytest.raises(CacheError, match=f"cache.path: {other_hdf5} is an HDF5 file but not a face cache"):
        FaceCache(other_hdf5)


def test_garbage_keras_file_in_evaluate_py_is_named(built_cache, tmp_path):
    model = tmp_path / "model.keras"
    model.write_bytes(b"\x00garbage, not a zip archive")
    result = run_entry("evaluate.py", [f"paths.root={tmp_path}", f"model_uri={model}",
                                       f"cache.path={built_cache[1].cache.path}", "cache.size=48"])
    assert f"model_uri: {model} is not a Keras model: it is not a zip archive" in the_error_line(result)


def test_a_second_writer_stops_at_once_naming_the_first(synthetic_root, tmp_path):
    work = tmp_path / "work"
    args = preprocess_args(synthetic_root, work, "cache.chunk_rows=4", "num_workers=1")
    cache = cache_path_of(work)
    lock = lock_path_of(cache)
    first = subprocess.Popen(entry_command("preprocess.py", args), cwd=REPOSITORY, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: lock.exists() and lock.read_text().strip() == str(first.pid), first)
        first.send_signal(signal.SIGSTOP)  # holds the lock, and its files, until the second has run
        try:
            line = the_error_line(run_entry("preprocess.py", args))
        finally:
            first.send_signal(signal.SIGCONT)
        assert f"cache.path: {cache} is being written by process {first.pid} (lock file {lock})" in line
        assert first.wait(timeout=ENTRY_TIMEOUT_S) == 0
    finally:
        first.kill()
        first.wait()
    with FaceCache(cache) as written:  # the first's cache, whole: nothing of it was deleted or shared
        assert written.split_size("train") > 0
    assert not lock.exists() and not leftovers(work)


def unwritable_folder(folder: Path):
    """`folder` made unwritable: by its mode, or for root (whom modes do not stop) a read-only mount."""
    if os.geteuid() != 0:
        folder.mkdir()
        folder.chmod(0o555)
        return contextlib.nullcontext(folder)
    return mounted_tmpfs(folder, "ro,size=1m")


def test_unwritable_cache_folder_is_named(synthetic_root, tmp_path):
    with unwritable_folder(tmp_path / "readonly") as folder:
        cache = folder / "caches" / "faces.h5"
        result = run_entry("preprocess.py", preprocess_args(synthetic_root, tmp_path / "work", f"cache.path={cache}"))
        line = the_error_line(result)
        assert f"cache.path: cannot write in {folder} (" in line and "choose a cache.path in a folder" in line
        assert not any(folder.iterdir())


def file_size_limited(limit: int, args: list[str]) -> list[str]:
    """preprocess.py run with RLIMIT_FSIZE at `limit` bytes: a write past it fails with EFBIG, as
    writes fail on a full disk. (Python ignores SIGXFSZ, which would otherwise kill it.)"""
    setup = ("import os, resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (%d, %d)); "
             "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])" % (limit, limit))
    return [sys.executable, "-c", setup, "preprocess.py", *args]


@pytest.mark.parametrize("limit", ["file_size_limit", "full_tmpfs"])
def test_full_disk_leaves_no_partial_file_and_resumes(synthetic_root, tmp_path, limit, caplog):
    work = tmp_path / "work"
    with contextlib.ExitStack() as stack:
        if limit == "full_tmpfs":
            folder = stack.enter_context(mounted_tmpfs(tmp_path / "small", "size=512k"))
            cache = folder / "faces.h5"
        else:
            cache = cache_path_of(work)
        args = preprocess_args(synthetic_root, work, f"cache.path={cache}", "cache.chunk_rows=4", "num_workers=0")
        # 600 kB: a segment (64 faces of 1 kB) fits, the whole cache (900 faces) does not
        command = file_size_limited(600_000, args) if limit == "file_size_limit" else None
        line = the_error_line(run_entry("preprocess.py", args, command))
        assert f"cache.path: no room to write {cache} (" in line and "rerun the same command to continue" in line
        assert not leftovers(cache.parent) and not cache.exists()
        if limit == "file_size_limit":  # with room again, the rerun resumes from the complete segments
            cfg = compose_config("preprocess", work, args[1:])
            with caplog.at_level(logging.INFO, logger="affectexp"):
                run_preprocess(cfg)
            assert "Resuming" in caplog.text
            with FaceCache(cache) as whole:
                assert whole.split_size("train") > 0


def test_ctrl_c_ends_the_workers_in_one_line_and_the_rerun_continues(synthetic_root, tmp_path, caplog):
    work = tmp_path / "work"
    args = preprocess_args(synthetic_root, work, "cache.chunk_rows=4", "num_workers=2")
    cache = cache_path_of(work)
    parts = cache.with_name(cache.name + ".parts")
    # its own session: a terminal's Ctrl-C reaches the whole foreground group, workers included
    process = subprocess.Popen(entry_command("preprocess.py", args), cwd=REPOSITORY, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True,
                               preexec_fn=default_ctrl_c)
    try:
        wait_for(lambda: any(parts.glob("segment-*.h5")), process)
        workers = worker_pids(process.pid)
        os.killpg(process.pid, signal.SIGINT)
        output, _ = process.communicate(timeout=ENTRY_TIMEOUT_S)
    finally:
        process.kill()
        process.wait()
    line = the_error_line(subprocess.CompletedProcess(process.args, process.returncode, output),
                          status=INTERRUPTED_STATUS)
    assert line.endswith("interrupted; rerun the same command to continue")
    assert workers and not wait_until_ended(workers)
    assert not leftovers(work) and not cache.exists() and not lock_path_of(cache).exists()
    assert any(parts.glob("segment-*.h5"))  # the complete segments stay, to resume from

    cfg = compose_config("preprocess", work, args[1:])
    with caplog.at_level(logging.INFO, logger="affectexp"):
        run_preprocess(cfg)
    assert "Resuming" in caplog.text and not parts.exists()


def test_a_trainer_value_no_run_can_use_stops_before_any_mlflow_run(built_cache, tmp_path):
    result = run_entry("train.py", [f"paths.root={tmp_path}", f"cache.path={built_cache[1].cache.path}",
                                    "cache.size=48", "trainer.epochs=0"])
    assert "trainer.epochs: 0; it must be the epochs to train, 1 or more" in the_error_line(result)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "runs").exists()


def test_a_key_of_the_unchosen_tuner_is_one_line_not_hydras_traceback(tmp_path):
    result = run_entry("train.py", [f"paths.root={tmp_path}", "tuner.max_trials=2"])
    assert ("tuner.max_trials: no tuner is chosen to set it on; choose one too: tuner=<bayesian|hyperband|random>"
            in the_error_line(result))


def test_a_cache_path_that_is_a_folder_is_named_before_any_work(synthetic_root, tmp_path):
    from affectexp.data.cache import CacheError, FaceCache
    from affectexp.tasks.preprocess import run_preprocess

    folder = tmp_path / "caches"
    folder.mkdir()
    (folder / "kept.txt").write_text("kept")
    message = rf"^cache.path: {folder} is a folder; a cache is one file: give its path, such as {folder}/faces.h5$"
    for overwrite in ("false", "true"):
        cfg = compose_config("preprocess", tmp_path, preprocess_args(synthetic_root, tmp_path, f"cache.path={folder}",
                                                                    f"overwrite={overwrite}"))
        with pytest.raises(CacheError, match=message):
            run_preprocess(cfg)
    with pytest.raises(CacheError, match=message):
        FaceCache(folder)
    assert [p.name for p in tmp_path.parent.glob(f"{tmp_path.name}/caches*")] == ["caches"]
    assert [p.name for p in folder.iterdir()] == ["kept.txt"]
