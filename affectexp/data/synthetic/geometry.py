"""Face geometry in face units: the outline, features and iBUG-68 landmarks of one face.

Face units: origin at the face centre, x to the image right, y down (as in images); the face
oval's half-width ``a`` is about 1 and its half-height ``b`` about 1.3. Every curve is an
(N, 2) float64 array of (x, y) in these units; ``draw`` maps them to pixels. The landmarks are
taken from the same curves that are drawn, so they match the picture by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from affectexp.data.synthetic.expressions import Expression

# Sample positions along a feature (u = -1 image-left end .. +1 image-right end).
_U = np.linspace(-1.0, 1.0, 25)


@dataclass(frozen=True)
class FaceShape:
    """Identity: proportions that stay fixed whatever the expression (floats, face units)."""

    a: float  # half-width of the face oval
    b: float  # half-height (forehead top to chin)
    squareness: float  # superellipse exponent: 2 = ellipse, larger = squarer jaw
    chin: float  # 0..0.3, narrowing of the lower face toward the chin
    eye_y: float
    eye_dx: float  # eye centre distance from the midline
    eye_w: float  # eye half-width
    eye_h: float  # neutral upper-lid opening
    eye_tilt: float  # outer corners higher (+) or lower (-)
    iris_r: float
    gaze: tuple[float, float]
    brow_gap: float  # brow height above the eye centre
    brow_inner_x: float  # inner brow end distance from the midline
    brow_len: float
    brow_thick: float
    brow_arch: float
    nose_y: float  # nostril line
    nose_w: float
    mouth_y: float
    mouth_w: float  # mouth half-width
    lip_up: float  # upper-lip thickness
    lip_low: float
    ear_rx: float
    ear_ry: float
    box_top: float  # top edge of the detector-style box (upper forehead)


def sample_shape(rng: np.random.Generator) -> FaceShape:
    """A random face identity; every proportion varies a little around a plausible face."""
    u = rng.uniform
    a, b = u(0.86, 1.04), u(1.22, 1.42)
    eye_y = -0.05 * b + rng.normal(0.0, 0.02)
    return FaceShape(
        a=a, b=b, squareness=u(2.0, 2.9), chin=u(0.0, 0.3),
        eye_y=eye_y, eye_dx=0.40 * a + u(-0.03, 0.03), eye_w=u(0.18, 0.23), eye_h=u(0.08, 0.105),
        eye_tilt=u(-0.015, 0.03), iris_r=u(0.075, 0.092), gaze=(u(-0.025, 0.025), u(-0.01, 0.01)),
        brow_gap=u(0.19, 0.25), brow_inner_x=u(0.12, 0.17), brow_len=u(0.38, 0.48),
        brow_thick=u(0.045, 0.085), brow_arch=u(0.015, 0.06),
        nose_y=0.36 * b + u(-0.04, 0.04), nose_w=u(0.12, 0.18),
        mouth_y=0.63 * b + u(-0.03, 0.03), mouth_w=u(0.29, 0.36), lip_up=u(0.04, 0.07), lip_low=u(0.05, 0.085),
        ear_rx=u(0.1, 0.14), ear_ry=u(0.22, 0.28), box_top=-0.72 * b + u(-0.05, 0.05),
    )


def outline(shape: FaceShape, n: int = 72) -> np.ndarray:
    """Closed face contour, (n, 2), clockwise on screen starting at the image-right side."""
    theta = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return _outline_at(shape, theta)


def superellipse(a: float, b: float, exponent: float, theta: np.ndarray) -> np.ndarray:
    """Points (len(theta), 2) of |x/a|^n + |y/b|^n = 1 at angles ``theta`` (y down: pi/2 is the bottom)."""
    c, s = np.cos(theta), np.sin(theta)
    p = 2.0 / exponent
    return np.stack([a * np.sign(c) * np.abs(c) ** p, b * np.sign(s) * np.abs(s) ** p], axis=1)


def _outline_at(shape: FaceShape, theta: np.ndarray) -> np.ndarray:
    """Points of the superellipse face contour at angles ``theta`` (y down, theta=pi/2 is the chin)."""
    points = superellipse(shape.a, shape.b, shape.squareness, theta)
    x, y = points[:, 0], points[:, 1]
    # Narrow the lower face only, so the forehead stays wide and the chin gets its own shape.
    x = x * (1.0 - shape.chin * np.clip(y / shape.b, 0.0, 1.0) ** 2)
    return np.stack([x, y], axis=1)


def half_width_at(shape: FaceShape, y: float) -> float:
    """Half-width of the face contour at height ``y`` (for ears and hair placement)."""
    t = float(np.clip(y / shape.b, -0.999, 0.999))
    theta = np.arcsin(np.sign(t) * np.abs(t) ** (shape.squareness / 2.0))
    return float(_outline_at(shape, np.array([theta]))[0, 0])


def jaw(shape: FaceShape) -> np.ndarray:
    """iBUG points 0-16, (17, 2): from beside the image-left eye, round the chin, to the right."""
    theta = np.pi + 0.05 - np.arange(17) * (np.pi + 0.1) / 16.0
    return _outline_at(shape, theta)


@dataclass(frozen=True)
class Eye:
    """One eye: lid curves (25, 2) from the image-left corner to the image-right corner."""

    upper: np.ndarray
    lower: np.ndarray
    iris_centre: tuple[float, float]
    iris_r: float
    opening: float  # upper-lid height above the corner line (face units)


def eye(shape: FaceShape, expr: Expression, side: int) -> Eye:
    """The eye on ``side`` (-1 image left, +1 image right) with the expression's lid positions."""
    cx = side * shape.eye_dx
    x = cx + _U * shape.eye_w
    # Canthal tilt raises the outer corner, which is the one away from the nose (u * side > 0).
    base = shape.eye_y - shape.eye_tilt * _U * side
    opening = max(0.018, shape.eye_h + expr.eye_open)
    lower_depth = max(0.012, 0.7 * shape.eye_h * (1.0 - 0.6 * expr.eye_squint))
    upper = np.stack([x, base - opening * (1.0 - _U**2) ** 0.65], axis=1)
    lower = np.stack([x, base + lower_depth * (1.0 - _U**2) ** 0.85], axis=1)
    iris = (cx + shape.gaze[0], shape.eye_y + 0.01 + shape.gaze[1])
    return Eye(upper=upper, lower=lower, iris_centre=iris, iris_r=shape.iris_r, opening=opening)


def eye_landmarks(e: Eye) -> np.ndarray:
    """iBUG eye points, (6, 2): corner, two upper, corner, two lower (same order for both eyes)."""
    # _U has 25 samples: indices 0, 8, 16, 24 are u = -1, -1/3, 1/3, 1.
    return np.stack([e.upper[0], e.upper[8], e.upper[16], e.upper[24], e.lower[16], e.lower[8]])


@dataclass(frozen=True)
class Brow:
    """One brow: centre line (25, 2) from its inner end (v=0) to its outer end (v=1), thickness (25,)."""

    centre: np.ndarray
    thickness: np.ndarray


def brow(shape: FaceShape, expr: Expression, side: int) -> Brow:
    """The brow on ``side``; raise moves it up, brow_inner tilts its inner end, brow_in pulls it in."""
    v = np.linspace(0.0, 1.0, 25)
    raise_ = expr.brow_raise_left if side < 0 else expr.brow_raise_right
    inner_x = side * max(0.04, shape.brow_inner_x - expr.brow_in)
    outer_x = side * (shape.brow_inner_x + shape.brow_len)
    base = shape.eye_y - shape.brow_gap - raise_
    inner_y = base - expr.brow_inner
    outer_y = base + 0.03 - 0.3 * expr.brow_inner  # the outer end follows a little, as real brows do
    x = inner_x + v * (outer_x - inner_x)
    y = inner_y + v * (outer_y - inner_y) - shape.brow_arch * np.sin(np.pi * v**0.8)
    thickness = shape.brow_thick * (1.0 - 0.55 * v)
    return Brow(centre=np.stack([x, y], axis=1), thickness=thickness)


def brow_landmarks(b: Brow, side: int) -> np.ndarray:
    """iBUG brow points, (5, 2): image-left brow outer->inner (17-21), right brow inner->outer (22-26)."""
    idx = [0, 6, 12, 18, 24]  # v = 0, .25, .5, .75, 1
    points = b.centre[idx]
    return points[::-1] if side < 0 else points


@dataclass(frozen=True)
class Nose:
    """Bridge (4, 2) from between the eyes to the tip; nostril line (5, 2) left to right."""

    bridge: np.ndarray
    base: np.ndarray


def nose(shape: FaceShape, expr: Expression) -> Nose:
    """Nose landmarks/curves; a wrinkled nose (disgust) pulls the nostrils up."""
    lift = 0.035 * expr.nose_wrinkle
    tip_y = shape.nose_y - 0.03 - lift
    bridge = np.stack([np.zeros(4), np.linspace(shape.eye_y - 0.02, tip_y, 4)], axis=1)
    w = shape.nose_w * (1.0 + 0.15 * expr.nose_wrinkle)
    base = np.array([[-w, -0.015], [-w / 2, 0.02], [0.0, 0.035], [w / 2, 0.02], [w, -0.015]])
    base[:, 1] += shape.nose_y - lift
    return Nose(bridge=bridge, base=base)


@dataclass(frozen=True)
class Mouth:
    """Lip curves, each (25, 2) from the image-left corner to the image-right corner."""

    outer_upper: np.ndarray
    inner_upper: np.ndarray
    inner_lower: np.ndarray
    outer_lower: np.ndarray

    @property
    def is_open(self) -> bool:
        return bool(np.max(self.inner_lower[:, 1] - self.inner_upper[:, 1]) > 0.012)


def _mouth_curves(shape: FaceShape, expr: Expression, u: np.ndarray) -> tuple[np.ndarray, ...]:
    """x, outer-upper y, inner-upper y, inner-lower y, outer-lower y at positions ``u`` (arrays)."""
    w = shape.mouth_w * (1.0 + expr.mouth_width)
    x = u * w
    # Corner lift grows with u^2: a U (smile) or an arch (frown), each side on its own.
    lift = np.where(u < 0, expr.curve_left, expr.curve_right)
    mid = shape.mouth_y - lift * u**2
    # Opening: round (surprise) is an ellipse, stretched (fear, bared teeth) is nearly a box.
    power = 0.12 + 0.38 * expr.mouth_round
    gap = expr.mouth_open * (1.0 - u**2) ** power
    snarl = expr.lip_raise_left * np.exp(-(((u + 0.45) / 0.4) ** 2)) + expr.lip_raise_right * np.exp(
        -(((u - 0.45) / 0.4) ** 2)
    )
    inner_upper = mid - 0.35 * gap - snarl
    inner_lower = mid + 0.65 * gap
    # Lips thin out when pressed or stretched round.
    thin = (1.0 - 0.65 * expr.lip_press) * (1.0 - 0.35 * expr.mouth_round * min(expr.mouth_open / 0.3, 1.0))
    taper = np.clip(1.0 - u**2, 0.0, 1.0)
    bow = 1.0 - 0.3 * np.exp(-((u / 0.15) ** 2))  # cupid's bow dip in the middle of the upper lip
    outer_upper = inner_upper - shape.lip_up * thin * taper**0.45 * bow
    outer_lower = inner_lower + shape.lip_low * thin * taper**0.55
    return x, outer_upper, inner_upper, inner_lower, outer_lower


def mouth(shape: FaceShape, expr: Expression) -> Mouth:
    """The lips for this shape and expression (see ``_mouth_curves``)."""
    x, ou, iu, il, ol = _mouth_curves(shape, expr, _U)
    return Mouth(*(np.stack([x, y], axis=1) for y in (ou, iu, il, ol)))


def mouth_landmarks(shape: FaceShape, expr: Expression) -> np.ndarray:
    """iBUG mouth points 48-67, (20, 2): outer ring from the left corner, then inner ring."""
    t = 2.0 / 3.0
    outer_u = np.array([-1.0, -t, -t / 2, 0.0, t / 2, t, 1.0, t, t / 2, 0.0, -t / 2, -t])
    x, ou, _, _, ol = _mouth_curves(shape, expr, outer_u)
    outer_y = np.concatenate([ou[:7], ol[7:]])
    inner_u = np.array([-0.92, -0.4, 0.0, 0.4, 0.92, 0.4, 0.0, -0.4])
    xi, _, iu, il, _ = _mouth_curves(shape, expr, inner_u)
    corner_mid = (iu + il) / 2.0
    inner_y = np.concatenate([[corner_mid[0]], iu[1:4], [corner_mid[4]], il[5:]])
    return np.concatenate([np.stack([x, outer_y], axis=1), np.stack([xi, inner_y], axis=1)])


def landmarks(shape: FaceShape, expr: Expression) -> np.ndarray:
    """All 68 iBUG points in face units, (68, 2) float64."""
    left_eye, right_eye = eye(shape, expr, -1), eye(shape, expr, 1)
    n = nose(shape, expr)
    return np.concatenate([
        jaw(shape),
        brow_landmarks(brow(shape, expr, -1), -1),
        brow_landmarks(brow(shape, expr, 1), 1),
        n.bridge,
        n.base,
        eye_landmarks(left_eye),
        eye_landmarks(right_eye),
        mouth_landmarks(shape, expr),
    ])


def box_corners(shape: FaceShape) -> np.ndarray:
    """Corners of the detector-style box in face units, (4, 2): upper forehead to chin, ear to ear."""
    half = half_width_at(shape, shape.eye_y + 0.18) + 0.8 * shape.ear_rx
    top, bottom = shape.box_top, shape.b + 0.02
    return np.array([[-half, top], [half, top], [half, bottom], [-half, bottom]])


# How far the middle of the face stands out in front of its outline (face units): what a turned
# head shifts the features by, relative to the outline.
FACE_DEPTH = 0.75


def posed(points: np.ndarray, yaw: float, pitch: float) -> np.ndarray:
    """(N, 2) face units of a frontal face -> (N, 2) of the same face turned by ``yaw`` (left/right)
    and ``pitch`` (up/down), radians, seen from the front (orthographic).

    The face is a bulge of depth FACE_DEPTH inside its oval: turning it foreshortens the outline
    and moves the features towards the far side, as on a real turned head. Zero angles return
    ``points`` itself (the frontal face draws exactly as before poses existed).
    """
    if yaw == 0.0 and pitch == 0.0:
        return points
    x, y = points[:, 0], points[:, 1]
    z = FACE_DEPTH * np.sqrt(np.clip(1.0 - x * x - (y / 1.35) ** 2, 0.0, None))
    x_turned = x * np.cos(yaw) + z * np.sin(yaw)
    z_turned = z * np.cos(yaw) - x * np.sin(yaw)
    y_turned = y * np.cos(pitch) - z_turned * np.sin(pitch)
    return np.stack([x_turned, y_turned], axis=1)
