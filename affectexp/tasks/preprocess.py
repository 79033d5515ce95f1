"""Preprocessing: a data set's rows -> cropped uint8 faces -> one HDF5 cache + a skipped report."""

from __future__ import annotations

import collections
import contextlib
import ctypes
import hashlib
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from affectexp.config import PreprocessConfig, check_values
from affectexp.data.cache import CacheError, check_not_a_folder
from affectexp.data.cache_writer import CacheWriter, full_disk_as_error, partial_path, replaced_when_complete
from affectexp.data.faces import FaceSpec
from affectexp.data.labels import ClassSet
from affectexp.data.shards import check_shard, merge_shards, shard_bounds, shard_fingerprint, shard_path
from affectexp.data.sources.rows import (PIXEL_SPAN_COLUMNS, Source, SourceError, concat_skipped, recorded_content,
                                         split_off)
from affectexp.data.splits import assign_validation
from affectexp.data.summary import (
    PreprocessSummary,
    cache_attrs,
    check_training_faces,
    report_path_of,
    reuse_existing,
    written_counts,
)
from affectexp.data.workers import ChunkResult, ChunkTask, crop_chunk, init_worker, start_worker_process
from affectexp.errors import UserInputError
from affectexp.locks import exclusive_lock
from affectexp.processes import children_ignore_interrupts

log = logging.getLogger(__name__)


# Config sections that decide the cache's content (and so its fingerprint).
CONTENT_SECTIONS = ("dataset", "classes", "cache", "faces", "split")


def content_config(cfg: DictConfig) -> dict:
    """The config sections that decide the cache's content, as plain data (recorded in the
    cache's attributes, hashed into its fingerprint)."""
    return {k: OmegaConf.to_container(cfg[k], resolve=True, enum_to_str=True) for k in CONTENT_SECTIONS}


@dataclass
class CacheJob:
    """What one run writes: `rows` cropped into `path`, the source's refused rows in its
    report, stamped with `fingerprint`; `shard` describes the part a shard holds (else None)."""

    path: Path
    rows: pd.DataFrame
    skipped: list[pd.DataFrame]
    fingerprint: str
    shard: dict | None = None


def run_preprocess(cfg: DictConfig) -> PreprocessSummary:
    """Build the cache at cfg.cache.path from cfg.dataset, or reuse it if it is up to date.

    With shard.count > 1 only shard shard.index of the rows is cropped, into its shard file;
    with merge=true the shard files are joined into cfg.cache.path (see shards.py). One process
    at a time writes a given file: a second one stops at once with LockHeld, naming the first.
    """
    check_values(cfg)  # bad values stop here, before any work
    # The config read once: typed settings for the run, plain content sections for the cache's record.
    settings: PreprocessConfig = OmegaConf.to_object(cfg)
    content = content_config(cfg)
    class_set = ClassSet(list(settings.classes.names))
    shard = settings.shard
    check_shard(shard.index, shard.count)
    resolve_workers(settings.num_workers)
    cache_path = Path(settings.cache.path)
    check_not_a_folder(cache_path)
    sharded = shard.count > 1 and not settings.merge
    written = shard_path(cache_path, shard.index, shard.count) if sharded else cache_path
    with exclusive_lock(written, "cache.path"):
        source: Source = instantiate(settings.dataset)
        source.prepare()
        started = time.perf_counter()
        rows, skipped, rows_read = labelled_rows(settings, source, class_set)
        content = recorded_content(content, source)
        fingerprint = content_fingerprint(content, rows)
        if settings.merge:
            return merge_shards(cache_path, shard.count, content, class_set, fingerprint, rows_read, started,
                                overwrite=settings.overwrite)
        job = shard_job(CacheJob(cache_path, rows, skipped, fingerprint), shard.index, shard.count)
        return build_cache(settings, content, job, class_set, rows_read, started)


def labelled_rows(settings: PreprocessConfig, source: Source, class_set: ClassSet) -> tuple[pd.DataFrame, list[pd.DataFrame], int]:
    """(the source's rows in the class set, labelled and ordered split by split; the rows left
    out, as skipped tables; how many rows the source read). Raises SourceError if none is usable.

    No reference to the source's own table outlives this call: the parent holds one table.
    """
    source_rows = source.read(landmarks=settings.faces.align)
    rows_read = len(source_rows.rows) + len(source_rows.skipped)
    rows, skipped = select_classes(source_rows.rows, class_set, [source_rows.skipped])
    del source_rows
    if rows.empty:
        raise SourceError(f"dataset {settings.dataset['name']}: no row of the classes {list(class_set.names)} is usable")
    rows = assign_validation(rows, settings.split.val_fraction, settings.split.seed)
    release_unused_memory()
    return rows, skipped, rows_read


def release_unused_memory() -> None:
    """Hand back to the OS the memory that parsing the lists used only for a while.

    glibc's malloc and Arrow's allocator keep freed memory for reuse; without this the
    parent would carry the CSV parser's peak, which grows with the rows read, through the
    whole crop phase (measured: peak RSS 1.12x -> 1.07x from 20k to 80k rows).
    """
    try:
        import pyarrow
    except ImportError:  # pandas without Arrow strings: nothing held there
        pass
    else:
        pyarrow.default_memory_pool().release_unused()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)  # glibc only
    if trim is not None:
        trim(0)


def shard_job(whole: CacheJob, index: int, count: int) -> CacheJob:
    """The part of a run that shard `index` of `count` does (the whole run when count is 1).

    Rows that the source refused go to shard 0's report only, so the shards' reports
    concatenate to the unsharded run's report.
    """
    if count == 1:
        return whole
    start, stop = shard_bounds(len(whole.rows), index, count)
    return CacheJob(
        path=shard_path(whole.path, index, count),
        rows=whole.rows.iloc[start:stop].reset_index(drop=True),
        skipped=whole.skipped if index == 0 else [],
        fingerprint=shard_fingerprint(whole.fingerprint, index, count),
        shard={"index": index, "count": count, "rows": [start, stop], "whole_fingerprint": whole.fingerprint},
    )


def build_cache(settings: PreprocessConfig, content: dict, job: CacheJob, class_set: ClassSet, rows_read: int,
                started: float) -> PreprocessSummary:
    """Crop the job's rows into its cache file (resuming an interrupted run), or reuse it if up to date;
    `content` is what its attributes record (see run_preprocess)."""
    reused = reuse_existing(job.path, job.fingerprint, settings.overwrite)
    if reused is not None:
        return reused
    spec = FaceSpec.from_content(content)
    rows, chunk_rows = job.rows, settings.cache.chunk_rows
    with full_disk_as_error(job.path):
        writer = CacheWriter(job.path, (spec.size, spec.size, spec.channels), chunk_rows, job.fingerprint)
        try:
            if writer.rows_done:
                log.info("Resuming %s after %d of %d rows", writer.parts, writer.rows_done, len(rows))
            crop_into(writer, rows, spec, chunk_rows, resolve_workers(settings.num_workers))
            writer.seal()
            failed_index, failed_reasons = writer.failures()
            failures = rows.iloc[failed_index][["row_id", "path"]].assign(reason=failed_reasons)
            report = concat_skipped([*job.skipped, failures])
            report_path = report_path_of(job.path)
            write_report(report, report_path)
            summary = PreprocessSummary(
                job.path, report_path, rows_read,
                written_counts(writer.column("split"), writer.column("labels"), class_set),
                report["reason"].value_counts().to_dict(), time.perf_counter() - started,
            )
            if job.shard is None:  # a shard may hold only val or test rows; the merge checks the whole
                try:
                    check_training_faces(summary)
                except CacheError:
                    writer.abandon()  # every row was consumed: nothing is worth resuming
                    raise
            attrs = cache_attrs(content, class_set, summary, job.fingerprint)
            writer.finish(attrs if job.shard is None else {**attrs, "shard": job.shard})
        finally:
            writer.close()
    log.info("Preprocessing done\n%s", summary.table())
    return summary


def write_report(report: pd.DataFrame, path: Path) -> None:
    """The skipped-row report as CSV at `path`, in place only once complete."""
    with replaced_when_complete(path, partial_path(path)) as partial:
        report.to_csv(partial, index=False)


def resolve_workers(num_workers: int | None) -> int:
    """Worker processes to start: None means one per core; 0 crops in this process."""
    if num_workers is not None and num_workers < 0:
        raise UserInputError(f"num_workers: {num_workers}; use a count of worker processes, 0, or null for every core")
    return num_workers if num_workers is not None else (os.cpu_count() or 1)


def select_classes(rows: pd.DataFrame, class_set: ClassSet, skipped: list[pd.DataFrame]):
    """Label rows in the class set; rows of other expressions go to the report, not silently away."""
    labels = rows["expression"].map(class_set.label_of_code)
    rows = rows.assign(label=labels.astype(np.int16))
    rows = split_off(rows, (rows["label"] < 0).values, "not_in_class_set", skipped)
    return rows, skipped


FINGERPRINT_ROWS = 65_536


def content_fingerprint(content: dict, rows: pd.DataFrame) -> str:
    """Hash of the content-deciding config sections, of every row (path, box, label, split, and where
    present the landmarks used for alignment and the place of text-encoded pixels) and of
    each file the rows name (its size and modification time: see file_stamps)."""
    digest = hashlib.sha256()
    sections = {**content, "cache": {k: v for k, v in content["cache"].items() if k != "path"}}
    digest.update(json.dumps(sections, sort_keys=True).encode())
    columns = ["path", "x", "y", "w", "h", "expression", "split"]
    columns += [c for c in PIXEL_SPAN_COLUMNS if c in rows]
    if content["faces"]["align"]:
        columns.append("landmarks")
    for start in range(0, len(rows), FINGERPRINT_ROWS):  # hashed in parts: no per-row array of the whole table
        part = rows.iloc[start:start + FINGERPRINT_ROWS][columns]
        digest.update(pd.util.hash_pandas_object(part, index=False).to_numpy().tobytes())
    digest.update(file_stamps(rows["path"]).tobytes())
    return digest.hexdigest()


def file_stamps(paths: pd.Series) -> np.ndarray:
    """(size in bytes, modification time in ns) of each distinct file of `paths`, in order of
    first appearance, (-1, -1) where it is missing; (n, 2) int64.

    What makes a cache stale when images are added, removed or rewritten under the same
    names, as `make` and rsync judge files: one stat a file, nothing read (measured here: 20 ms
    for 5,000 files, so about 4 s for a million).
    """
    unique = pd.unique(paths.to_numpy())
    stamps = np.full((len(unique), 2), -1, dtype=np.int64)
    for i, path in enumerate(unique):
        try:
            status = os.stat(path)
        except OSError:  # missing or unreachable: the crop reports it; a later stat that works changes the stamp
            continue
        stamps[i] = status.st_size, status.st_mtime_ns
    return stamps


def chunk_tasks(rows: pd.DataFrame, spec: FaceSpec, chunk_rows: int, start: int) -> Iterator[ChunkTask]:
    """Tasks of `chunk_rows` rows each, from row `start` on; a task's index is its first row.

    Landmark strings travel only when the faces are aligned; pixel spans only for sources
    that have them (FER2013).
    """
    boxes = rows[["x", "y", "w", "h"]].to_numpy(dtype=np.float64)
    has_spans = all(c in rows for c in PIXEL_SPAN_COLUMNS)
    spans = rows[list(PIXEL_SPAN_COLUMNS)].to_numpy(dtype=np.int64) if has_spans else None
    for first in range(start, len(rows), chunk_rows):
        stop = first + chunk_rows
        yield ChunkTask(
            first, rows["path"].iloc[first:stop].tolist(), boxes[first:stop], spec,
            landmarks=rows["landmarks"].iloc[first:stop].tolist() if spec.align else None,
            spans=spans[first:stop] if spans is not None else None,
        )


def crop_in_order(tasks: Iterator[ChunkTask], num_workers: int) -> Iterator[ChunkResult]:
    """Results in task order; at most 2 tasks per worker in flight, so memory stays O(chunk).

    num_workers worker processes crop while this process writes what they return, so even
    one worker never waits for the cache; 0 crops here, without starting a process (tiny
    sets, tests).
    """
    if num_workers == 0:
        init_worker()
        yield from map(crop_chunk, tasks)
        return
    # spawn, not fork: the parent may have started threads (TensorFlow in a notebook or a test).
    context = multiprocessing.get_context("spawn")
    with children_ignore_interrupts():  # Ctrl-C is this process's to handle: it ends the pool
        pool = context.Pool(num_workers, initializer=start_worker_process)
    with pool:
        pending: collections.deque = collections.deque()
        for task in tasks:
            pending.append(pool.apply_async(crop_chunk, (task,)))
            if len(pending) >= 2 * num_workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def crop_into(writer: CacheWriter, rows: pd.DataFrame, spec: FaceSpec, chunk_rows: int, workers: int) -> None:
    """Crop the rows the writer has not consumed yet into it, chunk by chunk, in row order."""
    results = crop_in_order(chunk_tasks(rows, spec, chunk_rows, writer.rows_done), workers)
    # closing: on an error or Ctrl-C the workers end here, not whenever the traceback is freed
    with tqdm(total=len(rows), initial=writer.rows_done, unit="img", desc="preprocess", smoothing=0.1) as progress, \
            contextlib.closing(results):
        for result in results:
            chunk = rows.iloc[result.index:result.index + len(result.reasons)]
            ok = result.ok
            kept = chunk[ok]
            columns = {
                "labels": kept["label"].to_numpy(),
                "expression": kept["expression"].to_numpy(),
                "valence": kept["valence"].to_numpy(),
                "arousal": kept["arousal"].to_numpy(),
                "split": kept["split_code"].to_numpy(),
            }
            failed_index = result.index + np.flatnonzero(~ok)
            reasons = [reason for reason in result.reasons if reason is not None]
            writer.append_chunk(result.faces[ok], columns, kept["row_id"].tolist(), failed_index, reasons, len(chunk))
            progress.update(len(chunk))
