"""Writing a synthetic data set in AffectNet's manually-annotated layout.

    root/Manually_Annotated_file_lists/training.csv, validation.csv
    root/Manually_Annotated_Images/<1..64>/<64 hex digits>.jpg
    root/synthetic-truth.csv        (not easy: the expression each photo shows, see below)
    root/.synthetic-complete.json   (written last: the parameters of a finished set)

A set harder than `easy` (see ``difficulty``) can show another expression than its row's label
(label noise); synthetic-truth.csv lists, per photo, the label and the expression drawn.
Every photo depends only on (seed, split, index) and the difficulty, so the output is byte-identical whatever the
number of worker processes. Only files the generator itself planned are ever deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from affectexp.data.affectnet_layout import (
    CSV_COLUMNS,
    MANUAL_IMAGES_DIR,
    MANUAL_LISTS_DIR,
    NOT_ANNOTATED,
    TRAINING_CSV,
    VALIDATION_CSV,
    format_landmarks,
)
from affectexp.data.synthetic.difficulty import NEIGHBOUR, PRESETS, Difficulty, class_counts
from affectexp.data.synthetic.expressions import NUM_EXPRESSIONS
from affectexp.data.synthetic.face import render_face
from affectexp.errors import UserInputError

log = logging.getLogger(__name__)

# Bump when the drawing changes, so ensure_synthetic() regenerates sets made by older code.
GENERATOR_VERSION = 1
COMPLETE_MARKER = ".synthetic-complete.json"
TRUTH_CSV = "synthetic-truth.csv"
TRUTH_COLUMNS = ("subDirectory_filePath", "expression", "drawn_expression")
IN_PROGRESS_MARKER = ".synthetic-in-progress.json"
NUM_SUBDIRS = 64  # AffectNet spreads its images over numbered folders; so do we
NON_EXPRESSION_CODES = (8, 9, 10)
DEFAULT_NON_EXPRESSION_FRACTION = 0.02
_SPLITS = ((0, TRAINING_CSV), (1, VALIDATION_CSV))  # (split id used in seeds, file list)

EASY = PRESETS["easy"]

# One job: (images folder, seed, split id, index, label code, drawn code, relative path, difficulty).
_Job = tuple[str, int, int, int, int, int, str, Difficulty]


def _params(train_per_class: int, test_per_class: int, seed: int, non_expression_fraction: float,
            difficulty: Difficulty = EASY) -> dict:
    """What identifies a generated set (the worker count does not: it cannot change the output).
    The knobs are recorded unless they are easy's, so easy sets made before the knobs existed
    (the same files) are still recognised."""
    params = {
        "generator_version": GENERATOR_VERSION,
        "train_per_class": int(train_per_class),
        "test_per_class": int(test_per_class),
        "seed": int(seed),
        "non_expression_fraction": float(non_expression_fraction),
    }
    if difficulty != EASY:
        params["difficulty"] = difficulty.as_dict()
    return params


def _difficulty_of(params: dict) -> Difficulty:
    knobs = params.get("difficulty")
    if knobs is None:
        return EASY
    values = {**knobs, "strength": tuple(knobs["strength"]), "jpeg_quality": tuple(knobs["jpeg_quality"])}
    if values["class_shares"] is not None:
        values["class_shares"] = tuple(values["class_shares"])
    return Difficulty(**values)


def image_path(seed: int, split_id: int, index: int) -> str:
    """'<subdir>/<64 hex>.jpg' for one row: a hash of (seed, split, index), so it is stable."""
    digest = hashlib.sha256(f"affectexp-synthetic:{seed}:{split_id}:{index}".encode()).hexdigest()
    return f"{int(digest[:8], 16) % NUM_SUBDIRS + 1}/{digest}.jpg"


def _num_non_expression(train_per_class: int, fraction: float) -> int:
    """Extra training rows with codes 8-10: the fraction of the expression rows, at least 3 if any."""
    if fraction <= 0.0 or train_per_class == 0:
        return 0
    return max(len(NON_EXPRESSION_CODES), int(round(fraction * NUM_EXPRESSIONS * train_per_class)))


def plan_codes(seed: int, split_id: int, counts: np.ndarray, extra: int) -> np.ndarray:
    """Expression code of every row of one split, (N,) int64, shuffled deterministically:
    ``counts[c]`` rows of each code c in 0..7 plus ``extra`` rows of codes 8-10."""
    codes = np.repeat(np.arange(NUM_EXPRESSIONS), counts)
    codes = np.concatenate([codes, np.resize(np.array(NON_EXPRESSION_CODES), extra)])
    return np.random.default_rng([seed, split_id, 2**31 - 1]).permutation(codes)


def plan_drawn(seed: int, split_id: int, codes: np.ndarray, label_noise: float) -> np.ndarray:
    """The expression each row's photo shows, (N,) int64: its label, except for round(label_noise *
    n_c) rows of every code c in 0..7 (chosen deterministically), which show c's confusable
    neighbour (``difficulty.NEIGHBOUR``)."""
    drawn = codes.copy()
    if label_noise <= 0.0:
        return drawn
    rng = np.random.default_rng([seed, split_id, 2**31 - 2])
    for code in range(NUM_EXPRESSIONS):
        rows = np.flatnonzero(codes == code)
        noisy = rng.permutation(rows)[: int(round(label_noise * len(rows)))]
        drawn[noisy] = NEIGHBOUR[code]
    return drawn


def _plan(params: dict) -> Iterator[tuple[int, int, int, int, str]]:
    """(split id, index, label code, drawn code, relative path) of every row a generation with
    ``params`` writes."""
    seed = params["seed"]
    difficulty = _difficulty_of(params)
    extra = _num_non_expression(params["train_per_class"], params["non_expression_fraction"])
    for split_id, _ in _SPLITS:
        if split_id == 0:
            counts = class_counts(params["train_per_class"], difficulty.class_shares, NUM_EXPRESSIONS)
        else:  # AffectNet's validation list is balanced whatever its training list is
            counts = class_counts(params["test_per_class"], None, NUM_EXPRESSIONS)
        codes = plan_codes(seed, split_id, counts, extra if split_id == 0 else 0)
        drawn = plan_drawn(seed, split_id, codes, difficulty.label_noise)
        for index, (code, shown) in enumerate(zip(codes, drawn)):
            yield split_id, index, int(code), int(shown), image_path(seed, split_id, index)


def _format_affect(value: float) -> str:
    return "-2" if value == NOT_ANNOTATED else f"{value:.6f}"


def _render_row(job: _Job) -> str:
    """Worker: draw, compress and write one photo; return its CSV line (no newline)."""
    images_dir, seed, split_id, index, code, drawn, rel_path, difficulty = job
    rng = np.random.default_rng([seed, split_id, index])
    face = render_face(rng, drawn, difficulty=difficulty)
    quality = int(rng.integers(*difficulty.jpeg_quality))
    ok, encoded = cv2.imencode(".jpg", face.image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError(f"synthetic generator: JPEG encoding failed for {rel_path}")
    Path(images_dir, rel_path).write_bytes(encoded.tobytes())
    x, y, w, h = face.box
    fields = (rel_path, str(x), str(y), str(w), str(h), format_landmarks(face.landmarks), str(code),
              _format_affect(face.valence), _format_affect(face.arousal))
    return ",".join(fields)


def _worker_init() -> None:
    # One OpenCV thread per process: the pool already keeps every core busy.
    cv2.setNumThreads(1)


def _run_jobs(jobs: list[_Job], num_workers: int, desc: str) -> list[str]:
    """CSV lines of all ``jobs`` in order, computed in ``num_workers`` processes."""
    bar = tqdm(total=len(jobs), desc=desc, unit="img", disable=None)
    try:
        if num_workers <= 1 or len(jobs) < 2:
            return [_tick(bar, _render_row(job)) for job in jobs]
        # forkserver/spawn, not fork: the caller may already run TensorFlow threads, and forking
        # a threaded process can deadlock. Callers need the usual `if __name__ == "__main__":`.
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
        chunk = max(1, min(64, len(jobs) // (num_workers * 8)))
        with multiprocessing.get_context(method).Pool(num_workers, initializer=_worker_init) as pool:
            return [_tick(bar, line) for line in pool.imap(_render_row, jobs, chunksize=chunk)]
    finally:
        bar.close()


def _tick(bar: tqdm, value: str) -> str:
    bar.update(1)
    return value


def _write_text(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8", newline="\n")
    os.replace(tmp, path)


def _read_marker(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


class NotGeneratorOwned(UserInputError, FileExistsError):
    """The synthetic set's root holds AffectNet file lists that the generator did not write."""


def _remove_previous(root: Path) -> None:
    """Delete what an earlier (finished or interrupted) generation wrote under root, and nothing else.

    Raises FileExistsError if root holds AffectNet file lists that the generator did not write.
    """
    params = _read_marker(root / COMPLETE_MARKER) or _read_marker(root / IN_PROGRESS_MARKER)
    lists = [root / MANUAL_LISTS_DIR / name for _, name in _SPLITS]
    if params is None:
        if any(p.exists() for p in lists):
            raise NotGeneratorOwned(
                f"dataset.root: {root / MANUAL_LISTS_DIR} holds AffectNet file lists that the synthetic generator did not "
                f"write (no {COMPLETE_MARKER}); refusing to overwrite them. Point the synthetic data set at an "
                "empty or generator-owned directory."
            )
        return
    images = root / MANUAL_IMAGES_DIR
    try:
        planned = [rel for *_, rel in _plan(params)]
    except (KeyError, TypeError, ValueError):
        planned = []  # unreadable marker: remove only the lists and markers below
    for rel in planned:
        (images / rel).unlink(missing_ok=True)
    for folder in [images / str(i + 1) for i in range(NUM_SUBDIRS)] + [images]:
        _rmdir_if_empty(folder)
    lists.append(root / TRUTH_CSV)
    for path in lists + [p.with_name(p.name + ".tmp") for p in lists]:
        path.unlink(missing_ok=True)
    _rmdir_if_empty(root / MANUAL_LISTS_DIR)
    (root / COMPLETE_MARKER).unlink(missing_ok=True)
    (root / IN_PROGRESS_MARKER).unlink(missing_ok=True)


def _rmdir_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass  # missing, or holds files that are not ours


def generate_affectnet(
    root: Path,
    train_per_class: int,
    test_per_class: int,
    seed: int = 0,
    num_workers: int | None = None,
    non_expression_fraction: float = DEFAULT_NON_EXPRESSION_FRACTION,
    difficulty: Difficulty = EASY,
) -> None:
    """Write a synthetic data set in AffectNet's manually-annotated layout under ``root``.

    training.csv gets ``train_per_class`` rows for each code 0..7 (8 * train_per_class rows
    spread by ``difficulty.class_shares`` when it is set) plus about
    ``non_expression_fraction`` as many extra rows with codes 8, 9, 10 (at least 3); validation.csv
    gets ``test_per_class`` rows for each code 0..7. Rows are shuffled; both lists start with
    AffectNet's header line. The same (seed, counts) give byte-identical CSVs and JPEGs whatever
    ``num_workers`` is (None = os.cpu_count()). An earlier generation under root is replaced;
    the completion marker is written last, so an interrupted run is never taken as complete.
    ``difficulty`` sets how realistic the photos and labels are (see ``difficulty``); sets
    harder than easy also get synthetic-truth.csv (label, drawn expression per photo).
    Raises FileExistsError if root holds file lists the generator did not write.
    """
    if train_per_class < 0 or test_per_class < 0:
        raise ValueError(
            f"synthetic data set: counts must be >= 0, got train={train_per_class}, test={test_per_class}"
        )
    if not 0.0 <= non_expression_fraction < 1.0:
        raise ValueError(
            f"synthetic data set: non_expression_fraction must be in [0, 1), got {non_expression_fraction}"
        )
    root = Path(root)
    workers = (os.cpu_count() or 1) if num_workers is None else max(1, int(num_workers))
    params = _params(train_per_class, test_per_class, seed, non_expression_fraction, difficulty)
    root.mkdir(parents=True, exist_ok=True)
    _remove_previous(root)
    _write_text(root / IN_PROGRESS_MARKER, json.dumps(params, indent=2) + "\n")
    images = root / MANUAL_IMAGES_DIR
    for i in range(NUM_SUBDIRS):
        (images / str(i + 1)).mkdir(parents=True, exist_ok=True)
    (root / MANUAL_LISTS_DIR).mkdir(exist_ok=True)

    start = time.perf_counter()
    rows = list(_plan(params))
    total = len(rows)
    log.info("Generating %d synthetic photos under %s with %d process(es)", total, root, workers)
    header = ",".join(CSV_COLUMNS) + "\n"
    for split_id, csv_name in _SPLITS:
        jobs = [(str(images), int(seed), s, index, code, drawn, rel, difficulty)
                for s, index, code, drawn, rel in rows if s == split_id]
        lines = _run_jobs(jobs, workers, desc=f"synthetic {csv_name}")
        _write_text(root / MANUAL_LISTS_DIR / csv_name, header + "".join(line + "\n" for line in lines))
    if difficulty != EASY:
        truth = [f"{rel},{code},{drawn}\n" for _, _, code, drawn, rel in rows]
        _write_text(root / TRUTH_CSV, ",".join(TRUTH_COLUMNS) + "\n" + "".join(truth))
    for i in range(NUM_SUBDIRS):
        _rmdir_if_empty(images / str(i + 1))  # tiny sets leave most numbered folders unused

    _write_text(root / COMPLETE_MARKER, json.dumps(params, indent=2) + "\n")
    (root / IN_PROGRESS_MARKER).unlink(missing_ok=True)
    elapsed = time.perf_counter() - start
    log.info("Synthetic data set complete: %d photos in %.1f s (%.0f/s)", total, elapsed, total / max(elapsed, 1e-9))


class OtherDifficulty(UserInputError):
    """The synthetic set's root holds a set generated at another difficulty."""


def ensure_synthetic(root: Path, train_per_class: int, test_per_class: int, seed: int = 0,
                     num_workers: int | None = None, difficulty: Difficulty = EASY) -> bool:
    """Generate the set under ``root`` unless a complete one with these parameters is there.

    Returns True if it generated, False if it reused the existing set. A complete set made
    with other counts or seed (or by an older generator version) is deleted and regenerated; only
    the generator's own files are removed. A set made at another difficulty is never replaced:
    that raises OtherDifficulty (each difficulty gets its own dataset.root).
    """
    root = Path(root)
    wanted = _params(train_per_class, test_per_class, seed, DEFAULT_NON_EXPRESSION_FRACTION, difficulty)
    found = _read_marker(root / COMPLETE_MARKER) or _read_marker(root / IN_PROGRESS_MARKER)
    if found is not None and found.get("difficulty") != wanted.get("difficulty"):
        knobs = found.get("difficulty")
        made = "easy" if knobs is None else next((n for n, d in PRESETS.items() if d.as_dict() == knobs), f"knobs {knobs}")
        raise OtherDifficulty(
            f"dataset.root: {root} holds a synthetic set made at another difficulty ({made}); give this "
            f"difficulty its own folder (dataset=synthetic_hard does, or set dataset.root and dataset.name), "
            "or delete that folder"
        )
    found = _read_marker(root / COMPLETE_MARKER)
    lists_present = all((root / MANUAL_LISTS_DIR / name).is_file() for _, name in _SPLITS)
    if found == wanted and lists_present and not (root / IN_PROGRESS_MARKER).exists():
        log.info("Reusing the synthetic data set under %s (%s)", root, wanted)
        return False
    if found is not None and found != wanted:
        log.info("Synthetic data set under %s was made with %s; regenerating with %s", root, found, wanted)
    generate_affectnet(root, train_per_class, test_per_class, seed=seed, num_workers=num_workers,
                       difficulty=difficulty)
    return True
