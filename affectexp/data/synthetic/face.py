"""One synthetic photo: a face with a given expression, its box, landmarks and affect."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from affectexp.data.synthetic import geometry as geo
from affectexp.data.synthetic import photo
from affectexp.data.synthetic.appearance import sample_appearance
from affectexp.data.synthetic.difficulty import PRESETS, Difficulty
from affectexp.data.synthetic.draw import draw_face, draw_occluder
from affectexp.data.synthetic.expressions import NON_FACE, Expression, sample_affect, sample_expression

MIN_SIDE, MAX_SIDE = 160, 640  # photo height and width, pixels (each drawn independently)
MAX_ROLL = 15.0  # degrees of random in-plane rotation
BOX_FRACTION = (0.3, 0.7)  # box size relative to the photo's shorter side
OVERFLOW_RATE = 0.015  # share of photos whose box partly leaves the image, as in AffectNet


@dataclass(frozen=True)
class SyntheticFace:
    """One synthetic photo and its AffectNet-style annotation.

    image: (H, W, 3) uint8 BGR photo, H and W each in 160..640.
    box: (x, y, width, height) ints; x is the column and y the row, face = image[y:y+h, x:x+w].
        Detector-style: upper forehead to chin, ear to ear, axis-aligned around the rotated face;
        x, y >= 0, but about 1.5% of boxes run past the right or bottom edge.
    landmarks: (68, 2) float32 (x, y) pixels, iBUG-68 order, rotated with the face.
    valence, arousal: floats in [-1, 1]; -2.0 (not annotated) for codes 8-10.
    """

    image: np.ndarray
    box: tuple[int, int, int, int]
    landmarks: np.ndarray
    valence: float
    arousal: float


def _face_matrix(scale: float, roll_degrees: float, centre: tuple[float, float]) -> np.ndarray:
    """(2, 3) affine map face units -> pixels; positive roll turns the face counter-clockwise on screen."""
    t = np.deg2rad(roll_degrees)
    c, s = np.cos(t) * scale, np.sin(t) * scale
    # y points down in images, so a counter-clockwise turn on screen is (x, y) -> (x c + y s, -x s + y c).
    return np.array([[c, s, centre[0]], [-s, c, centre[1]]])


def _place_face(rng: np.random.Generator, height: int, width: int, shape: geo.FaceShape,
                roll_degrees: float, pose: tuple[float, float] = (0.0, 0.0)
                ) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Choose the face's size and position: its (2, 3) transform and its integer box (around the
    face turned by ``pose``, (yaw, pitch) radians)."""
    corners = geo.posed(geo.box_corners(shape), *pose)
    extent = corners.max(axis=0) - corners.min(axis=0)
    target = rng.uniform(*BOX_FRACTION) * min(height, width)
    matrix = _face_matrix(target / float(extent.max()), roll_degrees, (0.0, 0.0))
    pixels = corners @ matrix[:, :2].T
    low, high = pixels.min(axis=0), pixels.max(axis=0)  # box offsets from the face centre
    size = high - low
    centre_x = rng.uniform(-low[0], width - high[0])
    centre_y = rng.uniform(-low[1], height - high[1])
    if rng.random() < OVERFLOW_RATE:
        # Push the box partly past the right or bottom edge; x, y stay >= 0 as in AffectNet.
        overshoot = rng.uniform(0.1, 0.35)
        if rng.random() < 0.5:
            centre_x = width - high[0] + overshoot * size[0]
        else:
            centre_y = height - high[1] + overshoot * size[1]
    matrix[:, 2] = (centre_x, centre_y)
    x, y = int(round(max(0.0, centre_x + low[0]))), int(round(max(0.0, centre_y + low[1])))
    return matrix, (x, y, int(round(size[0])), int(round(size[1])))


def render_face(rng: np.random.Generator, expression: int, roll_degrees: float | None = None,
                difficulty: Difficulty = PRESETS["easy"]) -> SyntheticFace:
    """Draw one photo showing AffectNet expression ``expression`` (0..10).

    Codes 0-7 show that expression at a random strength (0.5..1 when easy); 8 (None) and 9
    (Uncertain) show a random mix of two expressions; 10 (Non-Face) is a photo with no face, a
    box at a random place and the landmarks a face in that box would have. ``roll_degrees`` None
    gives a random in-plane rotation within +-15 degrees; a number forces it (positive =
    counter-clockwise on screen, the image-right eye higher, as in cv2.getRotationMatrix2D).
    ``difficulty`` adds subtler and blended expressions, head pose, occlusion and motion blur
    (see ``difficulty``); its easy knobs draw no random number, so easy photos are unchanged.
    All randomness comes from ``rng``, so the same generator state gives the same photo.
    """
    if not 0 <= expression <= NON_FACE:
        raise ValueError(f"expression code {expression}: AffectNet codes are 0..{NON_FACE}")
    height, width = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE + 1, 2))
    roll = float(rng.uniform(-MAX_ROLL, MAX_ROLL)) if roll_degrees is None else float(roll_degrees)
    yaw = float(np.deg2rad(rng.uniform(-difficulty.max_yaw, difficulty.max_yaw))) if difficulty.max_yaw else 0.0
    pitch = float(np.deg2rad(rng.uniform(-difficulty.max_pitch, difficulty.max_pitch))) if difficulty.max_pitch else 0.0
    shape = geo.sample_shape(rng)
    is_face = expression != NON_FACE
    image = photo.background(rng, height, width, clutter=int(rng.integers(3, 14)) + (0 if is_face else 8))
    matrix, box = _place_face(rng, height, width, shape, roll, (yaw, pitch))
    weight = 0.0
    if is_face:
        look = sample_appearance(rng)  # before the expression, so a code change keeps the person
        expr, strength, weight = sample_expression(rng, expression, difficulty.strength, difficulty.confusion)
        pen = draw_face(image, matrix, shape, expr, look, rng, (yaw, pitch))
        if difficulty.occlusion > 0.0 and rng.random() < difficulty.occlusion:
            draw_occluder(pen, shape, look, rng)
    else:
        expr, strength = Expression(), 1.0
    points = geo.posed(geo.landmarks(shape, expr), yaw, pitch) @ matrix[:, :2].T + matrix[:, 2]
    image = photo.finish(rng, image, face_pixels=float(box[2]), motion_blur=difficulty.motion_blur)
    valence, arousal = sample_affect(rng, expression, strength, weight)
    return SyntheticFace(image=image, box=box, landmarks=points.astype(np.float32), valence=valence, arousal=arousal)
