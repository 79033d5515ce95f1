"""Work done in preprocessing's worker processes: one chunk of rows in, its faces out.

Kept to NumPy and OpenCV so that a worker starts in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from affectexp.data.affectnet_layout import parse_landmarks
from affectexp.data.faces import FaceError, FaceSpec, load_face
from affectexp.processes import exit_with_parent


@dataclass
class ChunkTask:
    """Rows to crop, from table row `index` on.

    paths (n,) str; boxes (n, 4) float64 (x, y, w, h), NaN for the whole image;
    landmarks (n,) AffectNet landmark strings, only when spec.align (parsed here, in the
    worker, so that the parent does no per-row parsing); spans (n, 2) int64 (offset, length)
    of text-encoded faces inside `paths` (FER2013), -1 where the path is an image file,
    None when no row has one.
    """

    index: int
    paths: list[str]
    boxes: np.ndarray
    spec: FaceSpec
    landmarks: list[str] | None = None
    spans: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def span(self, i: int) -> tuple[int, int] | None:
        if self.spans is None or self.spans[i, 0] < 0:
            return None
        return int(self.spans[i, 0]), int(self.spans[i, 1])

    def landmarks_of(self, i: int) -> np.ndarray | None:
        return parse_landmarks(self.landmarks[i]) if self.landmarks is not None else None


@dataclass
class ChunkResult:
    """faces (n, size, size, channels) uint8 (zeros where failed); reasons[i] None where ok."""

    index: int
    faces: np.ndarray
    reasons: list[str | None]

    @property
    def ok(self) -> np.ndarray:
        return np.array([reason is None for reason in self.reasons], dtype=bool)


def init_worker() -> None:
    # Parallelism comes from the processes; OpenCV's own threads would only compete for cores.
    cv2.setNumThreads(1)


def start_worker_process() -> None:
    """Initializer of the worker processes: they end with the process that started them (which
    starts them with Ctrl-C ignored: it ends them itself)."""
    exit_with_parent()
    init_worker()


def crop_chunk(task: ChunkTask) -> ChunkResult:
    spec = task.spec
    faces = np.zeros((len(task), spec.size, spec.size, spec.channels), dtype=np.uint8)
    reasons: list[str | None] = []
    for i, (path, box) in enumerate(zip(task.paths, task.boxes)):
        try:
            faces[i] = load_face(path, tuple(box), spec, task.landmarks_of(i), task.span(i))
            reasons.append(None)
        except FaceError as error:
            reasons.append(error.reason)
    return ChunkResult(task.index, faces, reasons)
