"""Sharding preprocessing over several machines, and joining the shards into one cache.

Shard i of k crops the i-th contiguous part of the ordered row table (train, val, test; each
in source order) into `<cache>.shard-<i>-of-<k>.h5`, a complete cache of its own. Joining the
shards in index order therefore gives the same rows in the same order as one unsharded run;
the merge (preprocess.py merge=true) writes them into cache.path with the same attributes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import pandas as pd

from affectexp.data.cache import FaceCache
from affectexp.data.cache_writer import (
    assemble,
    concat_column,
    full_disk_as_error,
    partial_path,
    replaced_when_complete,
)
from affectexp.data.labels import ClassSet
from affectexp.data.summary import (
    PreprocessSummary,
    cache_attrs,
    check_training_faces,
    report_path_of,
    reuse_existing,
    written_counts,
)
from affectexp.errors import UserInputError

log = logging.getLogger(__name__)


class ShardError(UserInputError):
    """Shard settings that do not fit together, or shard files missing or from other inputs."""


def check_shard(index: int, count: int) -> None:
    """Refuse shard settings that cannot be right, before any work."""
    if count < 1:
        raise ShardError(f"shard.count: {count}; it is the number of shards, 1 or more")
    if not 0 <= index < count:
        raise ShardError(f"shard.index: {index} is not in 0..{count - 1} (shard.count={count})")


def shard_bounds(total: int, index: int, count: int) -> tuple[int, int]:
    """[start, stop) of shard `index` of `count` over `total` rows: contiguous, sizes differ by <= 1."""
    return total * index // count, total * (index + 1) // count


def shard_path(cache_path: Path, index: int, count: int) -> Path:
    """Where shard `index` of `count` is written: beside the cache."""
    return cache_path.with_name(f"{cache_path.stem}.shard-{index}-of-{count}{cache_path.suffix}")


def shard_fingerprint(whole: str, index: int, count: int) -> str:
    """A shard's own fingerprint: the whole run's inputs plus which part it holds."""
    return hashlib.sha256(f"{whole}:shard {index} of {count}".encode()).hexdigest()


def shard_paths(cache_path: Path, count: int, whole_fingerprint: str) -> list[Path]:
    """The `count` finished shard files of the run whose fingerprint is `whole_fingerprint`.

    Raises ShardError naming the missing shards (with the command that makes them) or the
    shards that were built from other inputs or settings.
    """
    if count < 2:
        raise ShardError(f"merge=true: shard.count is {count}; pass the shard.count the shard runs used (2 or more)")
    paths = [shard_path(cache_path, i, count) for i in range(count)]
    missing = [i for i, path in enumerate(paths) if not path.is_file()]
    if missing:
        raise ShardError(
            f"merge=true: shard(s) {missing} of {count} missing ({paths[missing[0]]}); run "
            f"`python preprocess.py shard.index=<i> shard.count={count}` with the same settings first"
        )
    for path in paths:
        with FaceCache(path) as shard:
            made_for = json.loads(shard.file.attrs.get("shard", "{}")).get("whole_fingerprint")
            if made_for != whole_fingerprint:
                raise ShardError(f"merge=true: {path} was built from other inputs or settings; rerun that shard")
    return paths


def merge_reports(reports: list[Path], target: Path) -> None:
    """Concatenate the shards' skipped-row CSVs into `target`, keeping the first header only."""
    with replaced_when_complete(target, partial_path(target)) as partial, \
            open(partial, "w", encoding="utf-8", newline="") as out:
        for i, report in enumerate(reports):
            with open(report, encoding="utf-8", newline="") as part:
                header = part.readline()
                if i == 0:
                    out.write(header)
                shutil.copyfileobj(part, out)


def remove_shards(paths: list[Path], reports: list[Path]) -> None:
    """Delete the shard files once the merged cache is in place."""
    for path in [*paths, *reports]:
        path.unlink(missing_ok=True)


def merge_shards(cache_path: Path, count: int, content: dict, class_set: ClassSet, fingerprint: str, rows_read: int,
                 started: float, overwrite: bool = False) -> PreprocessSummary:
    """Join the shard files of `count` runs into cache_path, then delete them.

    The result has the same rows, order and attributes (`content`: see cache_attrs) as one
    unsharded run with the same settings; an up-to-date cache is reused, another one is replaced
    only with `overwrite` (overwrite=true).
    """
    reused = reuse_existing(cache_path, fingerprint, overwrite)
    if reused is not None:
        return reused
    shards = shard_paths(cache_path, count, fingerprint)
    reports = [report_path_of(path) for path in shards]
    report_path = report_path_of(cache_path)
    with full_disk_as_error(cache_path):
        merge_reports(reports, report_path)
        reasons = pd.read_csv(report_path, usecols=["reason"], dtype=str, keep_default_na=False)["reason"]
        summary = PreprocessSummary(
            cache_path, report_path, rows_read,
            written_counts(concat_column(shards, "split"), concat_column(shards, "labels"), class_set),
            reasons.value_counts().to_dict(), time.perf_counter() - started,
        )
        check_training_faces(summary)
        with FaceCache(shards[0]) as first:  # the shards' face shape and chunking are the cache's
            face_shape, chunk_rows = first.face_shape, first.chunk_rows
        assemble(cache_path, shards, face_shape, chunk_rows, cache_attrs(content, class_set, summary, fingerprint))
    remove_shards(shards, reports)
    log.info("Merged %d shards\n%s", len(shards), summary.table())
    return summary
