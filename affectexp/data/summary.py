"""What a finished cache records about its making, and whether an existing cache can be reused."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from affectexp.data.cache import SPLITS, CacheError, FaceCache
from affectexp.data.labels import ClassSet

log = logging.getLogger(__name__)

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


def written_counts(split_codes: np.ndarray, labels: np.ndarray, class_set: ClassSet) -> dict[str, dict[str, int]]:
    """split name -> class name -> faces written, every split and class listed."""
    return {
        split: dict(zip(class_set.names, np.bincount(labels[split_codes == code], minlength=len(class_set)).tolist()))
        for code, split in enumerate(SPLITS)
    }


def cache_attrs(content: dict, class_set: ClassSet, summary: PreprocessSummary, fingerprint: str) -> dict:
    """The cache's attributes: what it holds, how it was made (`content`: the config sections that
    decide it, tasks/preprocess.content_config), what was left out."""
    sizes = [sum(summary.written[split].values()) for split in SPLITS]
    bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
    return {
        "class_names": list(class_set.names),
        "split_ranges": {split: [bounds[i], bounds[i + 1]] for i, split in enumerate(SPLITS)},
        "config": content,
        "skipped_counts": summary.skipped,
        "fingerprint": fingerprint,
        "summary": {"rows_read": summary.rows_read, "written": summary.written, "skipped": summary.skipped},
    }


def reuse_existing(cache_path: Path, fingerprint: str, overwrite: bool) -> PreprocessSummary | None:
    """The summary of an up-to-date cache at cache_path, None if it must be (re)built.

    A cache built from other inputs (other settings, list rows, or image files: sizes and
    modification times), or a file that is not a readable cache, is never replaced silently:
    that needs overwrite=true.
    """
    if not cache_path.exists():
        return None
    try:
        with FaceCache(cache_path) as cache:
            existing = cache.file.attrs.get("fingerprint", "")
            summary = cache.attr("summary") if "summary" in cache.file.attrs else None
    except CacheError:  # unreadable or another schema version: its message says to pass overwrite=true
        if overwrite:
            return None
        raise
    if existing == fingerprint and summary is not None:
        log.info("Cache %s is up to date with its inputs: reusing it", cache_path)
        return PreprocessSummary(cache_path, report_path_of(cache_path), summary["rows_read"], summary["written"],
                                 summary["skipped"], 0.0, reused=True)
    if not overwrite:
        raise CacheError(
            f"cache.path: {cache_path} was built from other inputs (settings, list rows, or images added, "
            "removed or changed since); pass overwrite=true to rebuild it, or choose another cache.path"
        )
    return None


def check_training_faces(summary: PreprocessSummary) -> None:
    """Refuse a cache without a training face: CacheError naming the report and its main reasons."""
    if sum(summary.written["train"].values()):
        return
    main = sorted(summary.skipped.items(), key=lambda item: (-item[1], item[0]))[:3]
    reasons = ", ".join(f"{reason} {count}" for reason, count in main) or "none recorded"
    raise CacheError(
        f"cache.path: no training face could be cropped, so no cache was written ({summary.rows_read} rows read "
        f"from all lists, {summary.faces_written} faces of the other splits; main reasons rows were skipped: "
        f"{reasons}); see the skipped-row report {summary.report_path}, then fix dataset.root or the faces.* settings"
    )


def report_path_of(cache_path: Path) -> Path:
    return cache_path.with_name(cache_path.stem + ".skipped.csv")
