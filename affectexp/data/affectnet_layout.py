"""AffectNet's on-disk layout: folder names, CSV columns, landmark strings."""

from __future__ import annotations

import numpy as np

MANUAL_LISTS_DIR = "Manually_Annotated_file_lists"
MANUAL_IMAGES_DIR = "Manually_Annotated_Images"
AUTOMATIC_LISTS_DIR = "Automatically_Annotated_file_lists"
AUTOMATIC_IMAGES_DIR = "Automatically_Annotated_Images"
TRAINING_CSV = "training.csv"
VALIDATION_CSV = "validation.csv"
AUTOMATIC_CSV = "automatically_annotated.csv"

CSV_COLUMNS: tuple[str, ...] = (
    "subDirectory_filePath",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    "facial_landmarks",
    "expression",
    "valence",
    "arousal",
)

# Valence/arousal value AffectNet uses where a row was not annotated.
NOT_ANNOTATED = -2.0

NUM_LANDMARKS = 68
LEFT_EYE = slice(36, 42)
RIGHT_EYE = slice(42, 48)


def format_landmarks(points: np.ndarray) -> str:
    """(68, 2) array of (x, y) -> AffectNet's 'x1;y1;x2;y2;...' string."""
    return ";".join(f"{v:.2f}" for v in np.asarray(points, dtype=float).reshape(-1))


def parse_landmarks(text: str) -> np.ndarray | None:
    """AffectNet's landmark string -> (68, 2) float32 array of (x, y), or None if malformed."""
    try:
        values = np.array([float(v) for v in str(text).split(";") if v != ""], dtype=np.float32)
    except ValueError:
        return None
    if values.size != 2 * NUM_LANDMARKS or not np.isfinite(values).all():
        return None
    return values.reshape(NUM_LANDMARKS, 2)
