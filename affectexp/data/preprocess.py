"""Preprocessing: a data set's rows -> cropped uint8 faces -> one HDF5 cache + a skipped report."""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from affectexp.data.cache import SPLITS, CacheError, FaceCache
from affectexp.data.cache_writer import CacheWriter
from affectexp.data.faces import FaceSpec
from affectexp.data.labels import ClassSet
from affectexp.data.sources.rows import SourceError, concat_skipped, split_off
from affectexp.data.splits import assign_validation
from affectexp.data.workers import ChunkResult, ChunkTask, crop_chunk, init_worker

log = logging.getLogger(__name__)

# Config sections that decide the cache's content (and so its fingerprint).
CONTENT_SECTIONS = ("dataset", "classes", "cache", "faces", "split")


@dataclass
class PreprocessSummary:
    cache_path: Path
    report_path: Path
    rows_read: int
    written: dict[str, dict[str, int]]  # split -> class name -> faces
    skipped: dict[str, int]  # reason -> rows
    seconds: float
    reused: bool = False
    images_per_second: float = field(init=False)

    def __post_init__(self) -> None:
        self.images_per_second = self.faces_written / self.seconds if self.seconds > 0 else 0.0

    @property
    def faces_written(self) -> int:
        return sum(sum(per_class.values()) for per_class in self.written.values())

    def table(self) -> str:
        """A human-readable summary: rows, faces per split and class, skipped per reason, speed."""
        classes = list(next(iter(self.written.values()), {}))
        lines = [f"cache: {self.cache_path}", f"rows read: {self.rows_read}", "faces written:"]
        lines.append("  " + "split".ljust(8) + "".join(c[:9].rjust(10) for c in classes) + "total".rjust(10))
        for split, per_class in self.written.items():
            counts = [per_class.get(c, 0) for c in classes]
            lines.append("  " + split.ljust(8) + "".join(str(n).rjust(10) for n in counts) + str(sum(counts)).rjust(10))
        lines.append(f"skipped: {sum(self.skipped.values())} rows" + (f" (report: {self.report_path})" if self.skipped else ""))
        lines.extend(f"  {reason}: {count}" for reason, count in sorted(self.skipped.items()))
        lines.append(f"wall time: {self.seconds:.1f} s, {self.images_per_second:.0f} images/s")
        return "\n".join(lines)


def content_config(cfg: DictConfig) -> dict:
    """The config sections that decide the cache's content, as plain data."""
    return {k: OmegaConf.to_container(cfg[k], resolve=True, enum_to_str=True) for k in CONTENT_SECTIONS}


def face_spec(cfg: DictConfig) -> FaceSpec:
    content = content_config(cfg)
    return FaceSpec(size=content["cache"]["size"], color=content["cache"]["color"], **content["faces"])


def run_preprocess(cfg: DictConfig) -> PreprocessSummary:
    """Build the cache at cfg.cache.path from cfg.dataset, or reuse it if it is up to date."""
    class_set = ClassSet(list(cfg.classes.names))
    cache_path = Path(cfg.cache.path)
    source = instantiate(cfg.dataset)
    source.prepare()
    started = time.perf_counter()
    source_rows = source.read()
    rows, skipped = select_classes(source_rows.rows, class_set, [source_rows.skipped])
    if rows.empty:
        raise SourceError(f"dataset {cfg.dataset.name}: no row of the classes {list(class_set.names)} is usable")
    rows = assign_validation(rows, cfg.split.val_fraction, cfg.split.seed)
    fingerprint = content_fingerprint(cfg, rows)
    reused = reuse_existing(cache_path, fingerprint, cfg.overwrite)
    if reused is not None:
        return reused

    spec = face_spec(cfg)
    writer = CacheWriter(cache_path, (spec.size, spec.size, spec.channels), cfg.cache.chunk_rows, fingerprint)
    try:
        if writer.rows_done:
            log.info("Resuming %s after %d of %d rows", writer.parts, writer.rows_done, len(rows))
        crop_into(writer, rows, spec, cfg.cache.chunk_rows, resolve_workers(cfg.num_workers))
        writer.seal()
        failed_index, failed_reasons = writer.failures()
        failures = rows.iloc[failed_index][["row_id", "path"]].assign(reason=failed_reasons)
        report = concat_skipped([*skipped, failures])
        report_path = report_path_of(cache_path)
        report.to_csv(report_path, index=False)
        summary = PreprocessSummary(
            cache_path, report_path, len(source_rows.rows) + len(source_rows.skipped),
            written_counts(writer.column("split"), writer.column("labels"), class_set),
            report["reason"].value_counts().to_dict(), time.perf_counter() - started,
        )
        writer.finish(cache_attrs(cfg, class_set, summary, fingerprint))
    finally:
        writer.close()
    log.info("Preprocessing done\n%s", summary.table())
    return summary


def resolve_workers(num_workers: int | None) -> int:
    return num_workers if num_workers is not None else (os.cpu_count() or 1)


def select_classes(rows: pd.DataFrame, class_set: ClassSet, skipped: list[pd.DataFrame]):
    """Label rows in the class set; rows of other expressions go to the report, not silently away."""
    labels = rows["expression"].map(class_set.label_of_code)
    rows = rows.assign(label=labels.astype(np.int16))
    rows = split_off(rows, (rows["label"] < 0).values, "not_in_class_set", skipped)
    return rows, skipped


def content_fingerprint(cfg: DictConfig, rows: pd.DataFrame) -> str:
    """Hash of the content-deciding config and of every row (path, box, label, split)."""
    digest = hashlib.sha256()
    sections = content_config(cfg)
    sections["cache"].pop("path", None)
    digest.update(json.dumps(sections, sort_keys=True).encode())
    columns = ["path", "x", "y", "w", "h", "expression", "split"]
    digest.update(pd.util.hash_pandas_object(rows[columns], index=False).values.tobytes())
    return digest.hexdigest()


def reuse_existing(cache_path: Path, fingerprint: str, overwrite: bool) -> PreprocessSummary | None:
    """The summary of an up-to-date cache at cache_path, None if it must be (re)built.

    A cache built from other inputs is never replaced silently: that needs overwrite=true.
    """
    if not cache_path.exists():
        return None
    try:
        with FaceCache(cache_path) as cache:
            existing = cache.file.attrs.get("fingerprint", "")
            summary = cache.attr("summary")
    except Exception as error:  # unreadable or another schema version: same rule as a mismatch
        existing, summary = f"unreadable ({error})", None
    if existing == fingerprint and summary is not None:
        log.info("Cache %s is up to date with its inputs: reusing it", cache_path)
        return PreprocessSummary(cache_path, report_path_of(cache_path), summary["rows_read"], summary["written"],
                                 summary["skipped"], 0.0, reused=True)
    if not overwrite:
        raise CacheError(
            f"cache.path: {cache_path} was built from other inputs or settings; "
            "pass overwrite=true to replace it, or choose another cache.path"
        )
    return None


def report_path_of(cache_path: Path) -> Path:
    return cache_path.with_name(cache_path.stem + ".skipped.csv")


def chunk_tasks(rows: pd.DataFrame, spec: FaceSpec, chunk_rows: int, start: int) -> Iterator[ChunkTask]:
    """Tasks of `chunk_rows` rows each, from row `start` on; a task's index is its first row."""
    boxes = rows[["x", "y", "w", "h"]].to_numpy(dtype=np.float64)
    paths = rows["path"].tolist()
    for first in range(start, len(rows), chunk_rows):
        stop = first + chunk_rows
        yield ChunkTask(first, paths[first:stop], boxes[first:stop], spec)


def crop_in_order(tasks: Iterator[ChunkTask], num_workers: int) -> Iterator[ChunkResult]:
    """Results in task order; at most 2 tasks per worker in flight, so memory stays O(chunk)."""
    if num_workers <= 1:
        init_worker()
        yield from map(crop_chunk, tasks)
        return
    # spawn, not fork: the parent may have started threads (TensorFlow in a notebook or a test).
    context = multiprocessing.get_context("spawn")
    with context.Pool(num_workers, initializer=init_worker) as pool:
        pending: collections.deque = collections.deque()
        for task in tasks:
            pending.append(pool.apply_async(crop_chunk, (task,)))
            if len(pending) >= 2 * num_workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()


def crop_into(writer: CacheWriter, rows: pd.DataFrame, spec: FaceSpec, chunk_rows: int, workers: int) -> None:
    """Crop the rows the writer has not consumed yet into it, chunk by chunk, in row order."""
    with tqdm(total=len(rows), initial=writer.rows_done, unit="img", desc="preprocess", smoothing=0.1) as progress:
        for result in crop_in_order(chunk_tasks(rows, spec, chunk_rows, writer.rows_done), workers):
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


def written_counts(split_codes: np.ndarray, labels: np.ndarray, class_set: ClassSet) -> dict[str, dict[str, int]]:
    """split name -> class name -> faces written, every split and class listed."""
    return {
        split: dict(zip(class_set.names, np.bincount(labels[split_codes == code], minlength=len(class_set)).tolist()))
        for code, split in enumerate(SPLITS)
    }


def cache_attrs(cfg: DictConfig, class_set: ClassSet, summary: PreprocessSummary, fingerprint: str) -> dict:
    """The cache's attributes: what it holds, how it was made, what was left out."""
    sizes = [sum(summary.written[split].values()) for split in SPLITS]
    bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    return {
        "class_names": list(class_set.names),
        "split_ranges": {split: [bounds[i], bounds[i + 1]] for i, split in enumerate(SPLITS)},
        "config": content_config(cfg),
        "skipped_counts": summary.skipped,
        "fingerprint": fingerprint,
        "summary": {"rows_read": summary.rows_read, "written": summary.written, "skipped": summary.skipped},
    }
