"""Drawing one face onto a photo with OpenCV primitives.

Every shape is built in face units (see ``geometry``) and mapped to pixels by one affine
transform (scale, in-plane rotation, translation), so the face, its hair and the landmarks
rotate together. Polygons are drawn anti-aliased with 4 fractional bits, so small faces keep
smooth curves.
"""

from __future__ import annotations

import cv2
import numpy as np

from affectexp.data.synthetic import geometry as geo
from affectexp.data.synthetic.appearance import Appearance, Color
from affectexp.data.synthetic.expressions import Expression

_SHIFT = 4  # fractional bits for cv2 coordinates
_ONE = 1 << _SHIFT


class Pen:
    """Draws face-unit shapes onto ``image`` (H, W, 3) uint8 through ``matrix`` (2, 3) float64,
    after turning the head by ``pose`` (yaw, pitch) radians (see ``geometry.posed``)."""

    def __init__(self, image: np.ndarray, matrix: np.ndarray, pose: tuple[float, float] = (0.0, 0.0)):
        self.image = image
        self.matrix = matrix
        self.pose = pose
        self.scale = float(np.hypot(matrix[0, 0], matrix[0, 1]))  # pixels per face unit

    def to_pixels(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) face units -> (N, 2) float64 pixel coordinates."""
        return geo.posed(points, *self.pose) @ self.matrix[:, :2].T + self.matrix[:, 2]

    def _fixed(self, points: np.ndarray) -> np.ndarray:
        return np.round(self.to_pixels(points) * _ONE).astype(np.int32).reshape(-1, 1, 2)

    def width(self, units: float) -> int:
        """A line width in face units -> whole pixels (at least 1)."""
        return max(1, int(round(units * self.scale)))

    def fill(self, points: np.ndarray, color: Color) -> None:
        cv2.fillPoly(self.image, [self._fixed(points)], color, cv2.LINE_AA, _SHIFT)

    def stroke(self, points: np.ndarray, color: Color, width: float, closed: bool = False) -> None:
        cv2.polylines(self.image, [self._fixed(points)], closed, color, self.width(width), cv2.LINE_AA, _SHIFT)


def ellipse(cx: float, cy: float, rx: float, ry: float, n: int = 28, start: float = 0.0,
            end: float = 2.0 * np.pi) -> np.ndarray:
    """(n, 2) points on an axis-aligned ellipse (face units), from angle ``start`` to ``end``."""
    t = np.linspace(start, end, n, endpoint=end - start < 2.0 * np.pi - 1e-9)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def band(upper: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """Closed polygon between two curves running the same way: upper, then lower reversed."""
    return np.concatenate([upper, lower[::-1]])


def _mix(a: Color, b: Color, t: float) -> Color:
    t = float(np.clip(t, 0.0, 1.0))
    return tuple(int(round((1.0 - t) * x + t * y)) for x, y in zip(a, b))  # type: ignore[return-value]


# --- hair ------------------------------------------------------------------------------------

def _hair_cap(shape: geo.FaceShape, look: Appearance) -> np.ndarray:
    """Polygon of the hair on top of the head: outer skull arc, then the hairline back."""
    hairline, side_drop, tilt = look.hair_params
    ht = look.hair_thickness
    side_y = shape.eye_y - side_drop
    outer_b = shape.b + ht
    sin_side = float(np.clip(side_y / outer_b, -0.99, 0.99))
    start, end = np.pi - np.arcsin(sin_side), 2.0 * np.pi + np.arcsin(sin_side)
    outer = geo.superellipse(shape.a + ht, outer_b, shape.squareness, np.linspace(start, end, 30))
    side_x = geo.half_width_at(shape, side_y) - 0.03
    x = np.linspace(side_x, -side_x, 31)
    top_y = -hairline * shape.b
    if look.hair_style == "fringe":
        top_y = -0.62 * shape.b
    k = 4.0 if look.hair_style != "fringe" else 8.0
    y = top_y + (side_y - top_y) * (np.abs(x) / side_x) ** k + tilt * x * (look.hair_style == "side_part")
    if look.hair_style == "fringe":
        # Zigzag strands, pointing down, that stop well above the highest brow.
        y = y + 0.06 * np.abs(((x * 9.0) % 2.0) - 1.0) * (np.abs(x) < 0.8 * side_x)
    return np.concatenate([outer, np.stack([x, y], axis=1)])


def draw_back_hair(pen: Pen, shape: geo.FaceShape, look: Appearance) -> None:
    """Hair behind the face: long hair down to the shoulders, curls around the head, a bun."""
    ht = look.hair_thickness
    if look.hair_style == "long":
        top = geo.superellipse(shape.a + ht + 0.08, shape.b + ht, 2.3, np.linspace(np.pi, 2.0 * np.pi, 24))
        bottom_y = shape.b * (0.6 + look.hair_params[0] * 0.6)
        w = shape.a + ht + 0.1
        sides = np.array([[w, 0.0], [w + 0.05, bottom_y], [-w - 0.05, bottom_y], [-w, 0.0]])
        pen.fill(np.concatenate([top, sides]), look.hair)
    elif look.hair_style == "curly":
        r = 0.65 * ht
        for t in np.linspace(np.pi * 0.95, np.pi * 2.05, 13):
            p = geo.superellipse(shape.a + 0.7 * ht, shape.b + 0.7 * ht, 2.3, np.array([t]))[0]
            pen.fill(ellipse(p[0], p[1], r, r, 16), look.hair)
    elif look.hair_style == "bun":
        r = 0.28 + 0.4 * ht
        pen.fill(ellipse(0.0, -shape.b - ht - 0.5 * r, r, 0.9 * r, 24), look.hair)


def draw_front_hair(pen: Pen, shape: geo.FaceShape, look: Appearance) -> None:
    """The hair cap over the forehead (nothing for bald heads but a fringe of hair at the sides)."""
    if look.hair_style == "bald":
        for side in (-1, 1):
            y0, y1 = shape.eye_y - 0.25, shape.eye_y + 0.05
            x0, x1 = geo.half_width_at(shape, y0), geo.half_width_at(shape, y1)
            patch = np.array([[x0 - 0.06, y0], [x0 + 0.02, y0 - 0.05], [x1 + 0.03, y1], [x1 - 0.06, y1]])
            pen.fill(patch * np.array([side, 1.0]), look.hair)
        return
    pen.fill(_hair_cap(shape, look), look.hair)


# --- face parts ------------------------------------------------------------------------------

def draw_body(pen: Pen, shape: geo.FaceShape, look: Appearance) -> None:
    """Shoulders (clothes) and the neck, which sit behind the face."""
    pen.fill(ellipse(0.0, shape.b + 1.45, 2.3 * shape.a, 0.95, 36), look.clothes)
    nw = 0.5 * shape.a
    neck = np.array([[-nw, 0.3 * shape.b], [nw, 0.3 * shape.b], [nw * 1.08, shape.b + 0.75],
                     [-nw * 1.08, shape.b + 0.75]])
    pen.fill(neck, look.shade)


def draw_ears(pen: Pen, shape: geo.FaceShape, look: Appearance) -> None:
    """Both ears at about eye-to-nose height, behind the face outline."""
    y = shape.eye_y + 0.18
    x = geo.half_width_at(shape, y) - 0.02
    # The rim fold, drawn for the right ear and mirrored for the left one.
    rim = ellipse(x + 0.35 * shape.ear_rx, y, 0.45 * shape.ear_rx, 0.6 * shape.ear_ry, 12, -0.5 * np.pi, 0.5 * np.pi)
    for side in (-1, 1):
        pen.fill(ellipse(side * x, y, shape.ear_rx, shape.ear_ry, 20), look.skin)
        pen.stroke(rim * np.array([side, 1.0]), look.shade, 0.02)


def draw_skin_marks(pen: Pen, shape: geo.FaceShape, look: Appearance, rng: np.random.Generator) -> None:
    """Blush on the cheeks and freckles over the nose; identity only, no expression."""
    cheek_y = 0.5 * (shape.eye_y + shape.mouth_y)
    if look.blush is not None:
        for side in (-1, 1):
            pen.fill(ellipse(side * 0.55 * shape.a, cheek_y, 0.16, 0.1, 16), look.blush)
    if look.freckles:
        for _ in range(14):
            fx = rng.uniform(-0.6, 0.6) * shape.a
            fy = rng.uniform(shape.eye_y + 0.17, shape.nose_y)
            pen.fill(ellipse(fx, fy, 0.012, 0.012, 6), look.shade)


def draw_folds(pen: Pen, shape: geo.FaceShape, expr: Expression, look: Appearance) -> None:
    """Expression lines: smile folds, forehead lines, the frown between the brows, a smirk crease."""
    fold = max(look.fold_base, expr.cheek_raise, 0.7 * expr.nose_wrinkle)
    if fold > 0.05:
        color = _mix(look.skin, look.shade, fold)
        w = shape.mouth_w * (1.0 + expr.mouth_width)
        for side in (-1, 1):
            lift = expr.curve_left if side < 0 else expr.curve_right
            start = (side * (shape.nose_w + 0.07), shape.nose_y - 0.04)
            end = (side * (w + 0.1), shape.mouth_y - lift + 0.12)
            mid = (side * (w + 0.12 + 0.05 * fold), 0.5 * (start[1] + end[1]))
            pen.stroke(_quad(start, mid, end), color, 0.022)
    raised = max(expr.brow_raise_left, expr.brow_raise_right, 0.0) + max(expr.brow_inner, 0.0)
    if raised > 0.04:
        color = _mix(look.skin, look.shade, min(1.0, raised * 6.0))
        top = shape.eye_y - shape.brow_gap - raised - 0.12
        for i in range(3):
            y = top - 0.07 * i
            pen.stroke(_quad((-0.35, y + 0.02), (0.0, y - 0.02), (0.35, y + 0.02)), color, 0.016)
    frown = expr.brow_in - max(expr.brow_inner, 0.0)
    if frown > 0.03:
        color = _mix(look.skin, look.shade, min(1.0, frown * 10.0))
        y = shape.eye_y - shape.brow_gap + 0.04
        for side in (-1, 1):
            pen.stroke(np.array([[side * 0.05, y - 0.14], [side * 0.035, y]]), color, 0.018)
    if expr.smirk_crease != 0.0:
        side = 1 if expr.smirk_crease > 0 else -1
        w = shape.mouth_w * (1.0 + expr.mouth_width)
        lift = expr.curve_right if side > 0 else expr.curve_left
        corner = (side * w, shape.mouth_y - lift)
        color = _mix(look.skin, look.shade, min(1.0, abs(expr.smirk_crease) * 1.2))
        pen.stroke(_quad((corner[0] + side * 0.03, corner[1] - 0.08), (corner[0] + side * 0.08, corner[1]),
                         (corner[0] + side * 0.03, corner[1] + 0.07)), color, 0.022)


def _quad(p0: tuple[float, float], p1: tuple[float, float], p2: tuple[float, float], n: int = 12) -> np.ndarray:
    """(n, 2) points of the quadratic Bezier curve through control points p0, p1, p2."""
    t = np.linspace(0.0, 1.0, n)[:, None]
    return (1 - t) ** 2 * np.array(p0) + 2 * (1 - t) * t * np.array(p1) + t**2 * np.array(p2)


def draw_nose(pen: Pen, shape: geo.FaceShape, expr: Expression, look: Appearance, light_side: int) -> None:
    """Shaded side of the bridge, nose wings, nostrils and (disgust) wrinkles across the bridge."""
    n = geo.nose(shape, expr)
    tip = n.bridge[-1]
    w = n.base[-1, 0]
    side_line = np.array([[light_side * 0.07, shape.eye_y + 0.05], [light_side * 0.09, tip[1] - 0.05],
                          [light_side * (w * 0.9), n.base[0, 1] - 0.02]])
    pen.stroke(side_line, look.shade, 0.018)
    for side in (-1, 1):
        wing = ellipse(side * w * 0.85, n.base[0, 1] + 0.005, 0.07, 0.06, 10,
                       np.pi * (0.5 - 0.9 * side), np.pi * (0.5 + 0.1 * side))
        pen.stroke(wing, look.shade, 0.02)
        pen.fill(ellipse(side * w * 0.45, n.base[1, 1] - 0.005, 0.04, 0.022, 10), look.lid_line)
    if expr.nose_wrinkle > 0.15:
        color = _mix(look.skin, look.shade, expr.nose_wrinkle * 1.3)
        for i in range(3):
            y = shape.eye_y + 0.06 + 0.055 * i
            pen.stroke(_quad((-0.1, y + 0.02), (0.0, y - 0.015), (0.1, y + 0.02), 8), color, 0.016)


def draw_eye(pen: Pen, shape: geo.FaceShape, expr: Expression, look: Appearance, side: int) -> None:
    """Sclera, iris, pupil and highlight, trimmed to the lids by painting skin over the overflow."""
    e = geo.eye(shape, expr, side)
    pen.fill(band(e.upper, e.lower), look.sclera)
    ix, iy = e.iris_centre
    pen.fill(ellipse(ix, iy, e.iris_r, e.iris_r, 20), look.iris)
    pen.fill(ellipse(ix, iy, 0.45 * e.iris_r, 0.45 * e.iris_r, 14), (15, 15, 15))
    pen.fill(ellipse(ix + 0.35 * e.iris_r, iy - 0.35 * e.iris_r, 0.2 * e.iris_r, 0.2 * e.iris_r, 8),
             (245, 245, 245))
    # Skin over whatever of the iris sticks out of the lids: cheaper than clipping masks.
    margin = np.array([0.0, e.iris_r + 0.03])
    pen.fill(band(e.upper - margin, e.upper), look.skin)
    pen.fill(band(e.lower, e.lower + margin), look.skin)
    crease = e.upper[4:21] - np.array([0.0, 0.045 + 0.2 * e.opening])
    pen.stroke(crease, look.shade, 0.014)
    pen.stroke(e.upper, look.lid_line, 0.028)
    pen.stroke(e.lower, _mix(look.skin, look.lid_line, 0.45), 0.012)
    if expr.eye_squint > 0.2:
        # The raised lower lid bunches into a line under the eye (happy, disgust, anger).
        bag = e.lower[5:20] + np.array([0.0, 0.05])
        pen.stroke(bag, _mix(look.skin, look.shade, expr.eye_squint), 0.014)


def draw_brow(pen: Pen, shape: geo.FaceShape, expr: Expression, look: Appearance, side: int) -> None:
    """A filled brow, thick at its inner end and tapering outward."""
    b = geo.brow(shape, expr, side)
    half = np.stack([np.zeros_like(b.thickness), b.thickness / 2.0], axis=1)
    pen.fill(band(b.centre - half, b.centre + half), look.brows)


def draw_mouth(pen: Pen, shape: geo.FaceShape, expr: Expression, look: Appearance) -> None:
    """Mouth opening with teeth, then both lips and the dark lines that make it readable."""
    m = geo.mouth(shape, expr)
    if m.is_open:
        pen.fill(band(m.inner_upper, m.inner_lower), look.mouth_inside)
        inner = slice(3, 22)  # the teeth stop short of the corners
        up, low = m.inner_upper[inner], m.inner_lower[inner]
        tooth = 0.075
        if expr.teeth_upper > 0.5:
            edge = np.stack([up[:, 0], np.minimum(up[:, 1] + tooth, low[:, 1])], axis=1)
            pen.fill(band(up, edge), look.teeth)
        if expr.teeth_lower > 0.5:
            edge = np.stack([low[:, 0], np.maximum(low[:, 1] - tooth * 0.8, up[:, 1])], axis=1)
            pen.fill(band(edge, low), look.teeth)
    pen.fill(band(m.outer_upper, m.inner_upper), look.lips)
    pen.fill(band(m.inner_lower, m.outer_lower), look.lips)
    if m.is_open:
        pen.stroke(band(m.inner_upper, m.inner_lower), look.lip_line, 0.012, closed=True)
    else:
        pen.stroke(m.inner_upper, look.lip_line, 0.024)
    pen.stroke(band(m.outer_upper, m.outer_lower), look.lip_line, 0.01, closed=True)


def draw_glasses(pen: Pen, shape: geo.FaceShape, look: Appearance) -> None:
    """Clear glasses (frames, bridge, temples) for the people who wear them."""
    if look.glasses is None:
        return
    rx, ry, cy = shape.eye_w * 1.5, 0.16, shape.eye_y + 0.015
    for side in (-1, 1):
        cx = side * shape.eye_dx
        if look.glasses_round:
            frame = ellipse(cx, cy, rx, ry, 28)
        else:
            frame = geo.superellipse(rx, ry, 5.0, np.linspace(0.0, 2.0 * np.pi, 28, endpoint=False)) + (cx, cy)
        pen.stroke(frame, look.glasses, look.glasses_width, closed=True)
        temple_x = geo.half_width_at(shape, cy)
        pen.stroke(np.array([[side * (shape.eye_dx + rx), cy - 0.05], [side * temple_x, cy - 0.03]]),
                   look.glasses, look.glasses_width)
    inner = shape.eye_dx - rx
    pen.stroke(_quad((-inner, cy - 0.03), (0.0, cy - 0.08), (inner, cy - 0.03), 8), look.glasses,
               look.glasses_width)


def draw_face(image: np.ndarray, matrix: np.ndarray, shape: geo.FaceShape, expr: Expression,
              look: Appearance, rng: np.random.Generator, pose: tuple[float, float] = (0.0, 0.0)) -> Pen:
    """Draw the whole person (hair, body, face, features) onto ``image`` in place, back to front;
    return the pen (for drawing over the face).

    image: (H, W, 3) uint8 BGR; matrix: (2, 3) float64 face units -> pixels; pose: (yaw, pitch)
    radians.
    """
    pen = Pen(image, matrix, pose)
    draw_back_hair(pen, shape, look)
    draw_body(pen, shape, look)
    draw_ears(pen, shape, look)
    pen.fill(geo.outline(shape), look.skin)
    draw_skin_marks(pen, shape, look, rng)
    draw_folds(pen, shape, expr, look)
    draw_nose(pen, shape, expr, look, light_side=1 if rng.random() < 0.5 else -1)
    for side in (-1, 1):
        draw_eye(pen, shape, expr, look, side)
    draw_front_hair(pen, shape, look)
    for side in (-1, 1):
        draw_brow(pen, shape, expr, look, side)
    draw_mouth(pen, shape, expr, look)
    draw_glasses(pen, shape, look)
    return pen


# What covers part of a face in the wild, as (centre x, centre y, half-width, half-height) ranges in
# face units: a hand or phone over a cheek, sunglasses-like bars over the eyes, a scarf or
# microphone over the mouth.
_OCCLUDERS = (
    ((-0.6, 0.6), (-0.2, 0.5), (0.25, 0.45), (0.3, 0.55)),  # hand / phone
    ((-0.2, 0.2), (-0.1, 0.0), (0.55, 0.8), (0.08, 0.16)),  # bar over the eyes
    ((-0.2, 0.2), (0.75, 1.0), (0.45, 0.8), (0.2, 0.4)),  # scarf, microphone, cup
)


def draw_occluder(pen: Pen, shape: geo.FaceShape, look: Appearance, rng: np.random.Generator) -> None:
    """Cover part of the face with one random blob (skin-coloured like a hand, or any colour)."""
    cx, cy, rx, ry = (float(rng.uniform(*r)) for r in _OCCLUDERS[int(rng.integers(len(_OCCLUDERS)))])
    cy = cy * shape.b / 1.3 if cy > 0.0 else cy  # the mouth sits lower on a longer face
    color = look.skin if rng.random() < 0.4 else tuple(int(v) for v in rng.integers(0, 256, 3))
    pen.fill(ellipse(cx, cy, rx, ry, n=20), _mix(color, look.shade, 0.15))
