"""Work done in preprocessing's worker processes: one chunk of rows in, its faces out.

Kept to NumPy and OpenCV so that a worker starts in milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from affectexp.data.faces import FaceError, FaceSpec, load_face


@dataclass
class ChunkTask:
    """Rows to crop, from table row `index` on: paths (n,) and boxes (n, 4) float64 (x, y, w, h)."""

    index: int
    paths: list[str]
    boxes: np.ndarray
    spec: FaceSpec


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


def crop_chunk(task: ChunkTask) -> ChunkResult:
    spec = task.spec
    faces = np.zeros((len(task.paths), spec.size, spec.size, spec.channels), dtype=np.uint8)
    reasons: list[str | None] = []
    for i, (path, box) in enumerate(zip(task.paths, task.boxes)):
        try:
            faces[i] = load_face(path, tuple(box), spec)
            reasons.append(None)
        except FaceError as error:
            reasons.append(error.reason)
    return ChunkResult(task.index, faces, reasons)
