"""The photo around a face: background clutter, lighting, blur and sensor noise.

Speed matters here (thousands of photos per run), so nothing works on full-size float
images: smooth fields (background gradient, lighting) are made at a few pixels and resized,
and lighting and noise are applied with OpenCV's saturating uint8 arithmetic.
"""

from __future__ import annotations

import cv2
import numpy as np


def _color(rng: np.random.Generator) -> tuple[int, int, int]:
    c = rng.integers(0, 256, 3)
    return int(c[0]), int(c[1]), int(c[2])


def background(rng: np.random.Generator, height: int, width: int, clutter: int) -> np.ndarray:
    """A (height, width, 3) uint8 BGR scene: a smooth colour gradient plus ``clutter`` random shapes."""
    corners = rng.integers(0, 256, (2, 2, 3)).astype(np.uint8)
    image = cv2.resize(corners, (width, height), interpolation=cv2.INTER_LINEAR)
    for _ in range(clutter):
        _random_shape(rng, image)
    return image


def _random_shape(rng: np.random.Generator, image: np.ndarray) -> None:
    """One filled or outlined rectangle, circle, polygon, curve or set of stripes, in place."""
    h, w = image.shape[:2]
    size = min(h, w)
    kind = rng.integers(6)
    color = _color(rng)
    thickness = int(rng.integers(1, max(2, size // 40)))
    centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
    if kind == 0:
        dx, dy = (int(v) for v in rng.integers(-size // 2, size // 2, 2))
        cv2.rectangle(image, centre, (centre[0] + dx, centre[1] + dy), color, -1 if rng.random() < 0.6 else thickness)
    elif kind == 1:
        radius = int(rng.integers(4, max(5, size // 4)))
        cv2.circle(image, centre, radius, color, -1 if rng.random() < 0.6 else thickness, cv2.LINE_AA)
    elif kind == 2:
        points = rng.integers(0, [w, h], (int(rng.integers(3, 7)), 2)).astype(np.int32)
        cv2.fillPoly(image, [points], color, cv2.LINE_AA)
    elif kind == 3:
        points = rng.integers(0, [w, h], (int(rng.integers(2, 6)), 2)).astype(np.int32)
        cv2.polylines(image, [points], False, color, thickness, cv2.LINE_AA)
    elif kind == 4:
        axes = (int(rng.integers(4, max(5, size // 3))), int(rng.integers(4, max(5, size // 3))))
        cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), 0.0, float(rng.uniform(90, 360)), color,
                    thickness, cv2.LINE_AA)
    else:
        step = int(rng.integers(6, max(7, size // 8)))
        x0 = int(rng.integers(0, w))
        for x in range(x0, min(w, x0 + 6 * step), step):
            cv2.line(image, (x, 0), (x + int(rng.integers(-h // 2, h // 2 + 1)), h), color, thickness, cv2.LINE_AA)


def apply_lighting(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Multiply by a smooth gain field (0.55..1.35, slightly coloured): uneven light and exposure."""
    h, w = image.shape[:2]
    grid = int(rng.integers(2, 4))
    gains = rng.uniform(0.55, 1.35, (grid, grid, 1)) * rng.uniform(0.92, 1.08, (1, 1, 3))
    # 128 stands for a gain of 1: cv2.multiply then rescales by 1/128 and saturates in uint8.
    field = cv2.resize(np.clip(gains * 128.0, 0, 255).astype(np.uint8), (w, h), interpolation=cv2.INTER_LINEAR)
    return cv2.multiply(image, field, scale=1.0 / 128.0)


def apply_blur(rng: np.random.Generator, image: np.ndarray, face_pixels: float) -> np.ndarray:
    """Sometimes soften the photo: down- and up-sampling, as from a low-resolution camera."""
    if rng.random() >= 0.35:
        return image
    h, w = image.shape[:2]
    # Never blur the face below about 40 px across, or the expression itself is lost.
    factor = rng.uniform(1.3, max(1.31, min(3.0, face_pixels / 40.0)))
    small = cv2.resize(image, (max(8, int(w / factor)), max(8, int(h / factor))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def apply_noise(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Usually add uniform sensor noise (amplitude 2..14 grey levels), in uint8 arithmetic."""
    if rng.random() >= 0.75:
        return image
    amplitude = rng.uniform(2.0, 14.0)
    noise = np.frombuffer(rng.bytes(image.size), dtype=np.uint8).reshape(image.shape)
    # image + amplitude * (noise / 127.5 - 1), saturated to 0..255.
    return cv2.addWeighted(image, 1.0, noise, amplitude / 127.5, -amplitude)


def apply_motion_blur(rng: np.random.Generator, image: np.ndarray, face_pixels: float) -> np.ndarray:
    """Smear the photo along a random direction by 3..face/12 pixels: a moving head or camera."""
    length = int(round(rng.uniform(3.0, max(3.5, face_pixels / 12.0))))
    angle = rng.uniform(0.0, np.pi)
    size = 2 * (length // 2) + 1
    kernel = np.zeros((size, size), np.float32)
    c, dx, dy = size // 2, np.cos(angle) * (length / 2.0), np.sin(angle) * (length / 2.0)
    cv2.line(kernel, (int(round(c - dx)), int(round(c - dy))), (int(round(c + dx)), int(round(c + dy))), 1.0, 1)
    return cv2.filter2D(image, -1, kernel / kernel.sum())


def finish(rng: np.random.Generator, image: np.ndarray, face_pixels: float, motion_blur: float = 0.0) -> np.ndarray:
    """Lighting, then optional blur and (with probability ``motion_blur``) motion blur, then noise:
    the order a camera applies them. ``motion_blur`` 0 draws no extra random number."""
    image = apply_lighting(rng, image)
    image = apply_blur(rng, image, face_pixels)
    if motion_blur > 0.0 and rng.random() < motion_blur:
        image = apply_motion_blur(rng, image, face_pixels)
    return apply_noise(rng, image)
