"""Augmentation on the accelerator (trainer.augment_on=device): an augmentation preset, in
albumentations' serialised form as in conf/augmentation/, turned into batched Keras ops that run
inside the training step, on whatever device trains the model.

Why: albumentations augments one face at a time in Python on the CPU (about 300 us a face for
`strong` at 48 px, more for larger and RGB faces: benchmarks/README.md), so a GPU that trains
tens of thousands of faces a second outruns any number of CPU cores; here a batch is augmented by
a few dozen vectorised ops.

The preset is read through albumentations itself (A.from_dict), so its defaults and argument
forms are albumentations', and each transform draws its parameters from albumentations'
distributions, face by face, with its own probability p. The differences:
- Consecutive geometric transforms (flips, RandomResizedCrop, Affine) are resampled once, where
  albumentations resamples (and rounds) the face after each: each output pixel is taken back
  through the transforms, each reading beyond its input's edge as its border says (a crop: its
  own edge repeated), and read from the face once. That differs from albumentations by a few
  grey levels in under 1% of a smooth face's pixels (tested). A transform with a constant or
  wrapped border is resampled apart from the next, as albumentations does, since its output has
  edges inside the face that one resampling would draw otherwise (Geometric.reads_through).
- Resampling is bilinear in float32 (nearest where every transform of the group asks for
  it; cubic, area and Lanczos resample bilinearly); OpenCV interpolates in fixed point, so a
  pixel may differ by a grey level.
- The random numbers come from Keras' seeded generator (trainer.seed), not from albumentations'
  own: the same seed gives other draws from the same distributions. A resumed run continues the
  generator from its last committed epoch (training/commit.py), so it augments as the run that
  was never interrupted. Under strategy=mirrored every replica draws the same numbers for its
  share of the batch, as Keras' own random layers (dropout) do.
Where the ops are the same (flips, brightness and contrast, noise added to a face, dropout
holes), the pixels are albumentations' exactly for the same parameters (tests/test_device_augment.py).

Supported: Compose, OneOf (of the non-geometric ones), HorizontalFlip, VerticalFlip,
RandomResizedCrop (to the face's own size), Affine, RandomBrightnessContrast, GaussianBlur,
GaussNoise and CoarseDropout with a fill value; anything else stops at start (ConfigError).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import keras
import numpy as np
from keras import ops

from affectexp.errors import ConfigError
from affectexp.training.augment import build_transform, check_transform

# albumentations' border_mode (OpenCV's border types) -> how an index beyond the edge is read.
BORDERS = {0: "constant", 1: "replicate", 2: "reflect", 3: "wrap", 4: "reflect_101"}
NEAREST = 0  # cv2.INTER_NEAREST; every other interpolation resamples bilinearly here
# The name of the augmentation layer in front of the face model (with_device_augmentation).
AUGMENT_LAYER = "device_augmentation"


# --- Random draws -------------------------------------------------------------------------------

class Draw:
    """Random numbers for a batch of `n` faces, from a Keras SeedGenerator (each call advances it)."""

    def __init__(self, generator: keras.random.SeedGenerator, n):
        self.generator = generator
        self.n = n

    def uniform(self, low: float = 0.0, high: float = 1.0, shape: tuple = ()):
        """(n, *shape) float32 in [low, high)."""
        return keras.random.uniform((self.n, *shape), low, high, dtype="float32", seed=self.generator)

    def integers(self, low, high, shape: tuple = ()):
        """(n, *shape) whole numbers (float32) in [low, high], both included (random.randint's)."""
        draw = ops.floor(self.uniform(0.0, 1.0, shape) * (high - low + 1.0)) + low
        return ops.minimum(draw, high)  # a uniform draw of exactly 1.0 - ulp times a large range

    def chance(self, p: float):
        """(n,) bool, each True with probability p."""
        return self.uniform() < p

    def normal(self, shape: tuple):
        return keras.random.normal((self.n, *shape), dtype="float32", seed=self.generator)


# --- Affine maps: (a, b, c, d, e, f) for x' = a x + b y + c, y' = d x + e y + f, each (n,) or a number ---

IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def compose(second, first):
    """The map that applies `first`, then `second`."""
    a2, b2, c2, d2, e2, f2 = second
    a1, b1, c1, d1, e1, f1 = first
    return (a2 * a1 + b2 * d1, a2 * b1 + b2 * e1, a2 * c1 + b2 * f1 + c2,
            d2 * a1 + e2 * d1, d2 * b1 + e2 * e1, d2 * c1 + e2 * f1 + f2)


def invert(m):
    a, b, c, d, e, f = m
    det = a * e - b * d
    ai, bi, di, ei = e / det, -b / det, -d / det, a / det
    return ai, bi, -(ai * c + bi * f), di, ei, -(di * c + ei * f)


def gated(applied, m):
    """`m` for the faces where `applied` (n,) is True, the identity for the others."""
    return tuple(ops.where(applied, value, same) for value, same in zip(m, IDENTITY))


def shift(x, y):
    return 1.0, 0.0, x, 0.0, 1.0, y


def flip_matrix(height: int, width: int, horizontal: bool):
    """A flip in pixel coordinates (x -> width - 1 - x), as cv2.flip."""
    return (-1.0, 0.0, width - 1.0, 0.0, 1.0, 0.0) if horizontal else (1.0, 0.0, 0.0, 0.0, -1.0, height - 1.0)


def resized_crop_matrix(x_min, y_min, crop_width, crop_height, height: int, width: int):
    """The crop [x_min, x_min + crop_width) x [y_min, ...) resized to (height, width) as cv2.resize
    maps pixel centres (output x <- input x_min + (x + 0.5) * crop_width / width - 0.5), forward."""
    sx, sy = width / crop_width, height / crop_height
    return sx, 0.0, (0.5 - x_min) * sx - 0.5, 0.0, sy, (0.5 - y_min) * sy - 0.5


def affine_matrix(scale_x, scale_y, translate_x, translate_y, rotate, shear_x, shear_y, height: int, width: int):
    """albumentations' Affine matrix (create_affine_transformation_matrix), forward: about the
    face's centre, scale, then rotate (degrees), then shear (degrees), then translate (pixels)."""
    center = (width / 2 - 0.5, height / 2 - 0.5)
    radians = rotate * (math.pi / 180.0)
    cos, sin = ops.cos(radians), ops.sin(radians)
    tan_x, tan_y = ops.tan(shear_x * (math.pi / 180.0)), ops.tan(shear_y * (math.pi / 180.0))
    m = compose((scale_x, 0.0, 0.0, 0.0, scale_y, 0.0), shift(-center[0], -center[1]))
    m = compose((cos, sin, 0.0, -sin, cos, 0.0), m)
    m = compose((1.0, tan_x, 0.0, tan_y, 1.0, 0.0), m)
    m = compose(shift(translate_x, translate_y), m)
    return compose(shift(*center), m)


# --- Resampling: (n, H, W, C) float32 faces holding 0..255 whole numbers ---------------------------

class Edge(NamedTuple):
    """Where a geometric transform reads its input, and how beyond: `window` (x_low, y_low, x_high,
    y_high, pixel positions included, each (n,) or a number; None: the whole face) read beyond its
    edge as OpenCV's `border` type says ("constant": `fill`, a number or one per channel)."""

    border: str = "replicate"
    fill: Any = 0.0
    window: tuple | None = None


def fold(position, low, high, border: str):
    """Positions (any, not only whole ones) mapped to those within [low, high] that `border` reads
    there ("wrap": within [low, high + 1), the pixel after `high` being the one at `low`). Folding
    the position before interpolating is interpolating the border's pixels: the same values for a
    bilinear read (fedcba|abcdef for reflect, fedcb|abcdef for reflect_101)."""
    size = high - low + 1.0
    at = position - low
    if border == "wrap":
        return ops.mod(at, size) + low
    if border == "reflect":
        at = ops.mod(at, 2.0 * size)
        at = ops.where(at >= size, 2.0 * size - 1.0 - at, at)
    elif border == "reflect_101":
        period = ops.maximum(2.0 * size - 2.0, 1.0)
        at = ops.mod(ops.abs(at), period)
        at = ops.where(at > size - 1.0, period - at, at)
    return ops.minimum(ops.maximum(at, 0.0), size - 1.0) + low  # replicate; constant: the fill is mixed in by share


def share_inside(position, low, high, nearest: bool):
    """How much of an interpolated read at `position` comes from pixels within [low, high] (the rest
    is a constant border's fill): 1 inside, falling to 0 one pixel beyond (nearest: 0 or 1)."""
    beyond = ops.maximum(ops.maximum(low - position, position - high), 0.0)
    return ops.cast(beyond < 0.5, "float32") if nearest else ops.maximum(1.0 - beyond, 0.0)


def resample(images, moves: list, interpolation: str = "bilinear"):
    """The faces moved by `moves`, the geometric transforms applied in order, each (its output ->
    input map, each coefficient (n,) or a number; its Edge): each output pixel is taken back
    through the transforms, last to first, folded into each one's window as its border reads there,
    and read once from `images`, bilinearly or the nearest pixel. cv2.warpAffine and cv2.resize give
    the same pixels for one transform; for several, where they would resample (and round) the face
    after each, this resamples once. (n, H, W, C) float32 -> the same."""
    n = ops.shape(images)[0]
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    nearest = interpolation == "nearest"
    y = ops.arange(height, dtype="float32")[None, :, None]
    x = ops.arange(width, dtype="float32")[None, None, :]
    kept, filled = None, 0.0  # the share of each output pixel read from the faces, and the fill of the rest
    for inverse, edge in reversed(moves):
        a, b, c, d, e, f = (per_pixel(v) for v in inverse)
        x, y = a * x + b * y + c, d * x + e * y + f
        x_low, y_low, x_high, y_high = (per_pixel(v) for v in edge.window or (0.0, 0.0, width - 1.0, height - 1.0))
        if edge.border == "constant":
            share = (share_inside(x, x_low, x_high, nearest) * share_inside(y, y_low, y_high, nearest))[..., None]
            fill = ops.convert_to_tensor(np.asarray(edge.fill, dtype=np.float32))
            filled = filled + (1.0 - share) * fill * (1.0 if kept is None else kept)
            kept = share if kept is None else kept * share
        x, y = fold(x, x_low, x_high, edge.border), fold(y, y_low, y_high, edge.border)
    wraps = moves[0][1].border == "wrap"  # the first transform's border is the one that reads the faces
    pixels = ops.reshape(images, (-1, channels))
    first = ops.reshape(ops.arange(n, dtype="int32") * (height * width), (-1, 1, 1))

    def index(at, size: int):
        return ops.cast(ops.mod(at, float(size)) if wraps else ops.minimum(ops.maximum(at, 0.0), size - 1.0), "int32")

    def read(yy, xx):
        at = first + index(yy, height) * width + index(xx, width)
        return ops.reshape(ops.take(pixels, ops.reshape(at, (-1,)), axis=0), ops.shape(images))

    if nearest:
        out = read(ops.floor(y + 0.5), ops.floor(x + 0.5))
    else:
        x0, y0 = ops.floor(x), ops.floor(y)
        wx, wy = (x - x0)[..., None], (y - y0)[..., None]
        top = read(y0, x0) * (1.0 - wx) + read(y0, x0 + 1.0) * wx
        bottom = read(y0 + 1.0, x0) * (1.0 - wx) + read(y0 + 1.0, x0 + 1.0) * wx
        out = top * (1.0 - wy) + bottom * wy
    return out if kept is None else out * kept + filled


def per_pixel(value):
    """A number, or (n,) values per face -> (n, 1, 1), to broadcast over a face's pixel positions."""
    return value if isinstance(value, (int, float)) else ops.reshape(ops.cast(value, "float32"), (-1, 1, 1))


# --- Pixel operations on (n, H, W, C) float32 faces holding 0..255 whole numbers -----------------

def to_pixels(images):
    """Rounded to whole grey levels within 0..255, as OpenCV's uint8 results are."""
    return ops.clip(ops.round(images), 0.0, 255.0)


def per_face(values):
    """(n,) -> (n, 1, 1, 1), to broadcast over faces."""
    return ops.reshape(values, (-1, 1, 1, 1))


def brightness_contrast(images, alpha, beta):
    """images * alpha + beta per face, cut to 0..255 and truncated: albucore.multiply_add's uint8 table."""
    return ops.floor(ops.clip(images * per_face(alpha) + per_face(beta), 0.0, 255.0))


def add_noise(images, noise):
    """images + noise truncated to whole levels, cut to 0..255: albumentations' add_noise on uint8 faces."""
    return ops.clip(images + ops.trunc(noise), 0.0, 255.0)


def gaussian_blur(images, sigma, size, largest: int):
    """Each face blurred by a separable Gaussian of its own `sigma` (n,) and odd `size` (n,) (at most
    `largest`), albumentations' create_gaussian_kernel_1d, the border reflected as OpenCV's default
    (reflect_101), as cv2.sepFilter2D."""
    half = largest // 2
    offsets = ops.arange(-half, half + 1, dtype="float32")[None, :]
    weights = ops.exp(-0.5 * ops.square(offsets / ops.reshape(sigma, (-1, 1))))
    weights = ops.where(ops.abs(offsets) <= ops.reshape((size - 1.0) / 2.0, (-1, 1)), weights, 0.0)
    weights = weights / ops.sum(weights, axis=1, keepdims=True)  # (n, largest)
    height, width = images.shape[1], images.shape[2]
    padded = ops.pad(images, [[0, 0], [half, half], [0, 0], [0, 0]], mode="reflect")
    rows = sum(per_face(weights[:, k]) * padded[:, k:k + height] for k in range(2 * half + 1))
    padded = ops.pad(rows, [[0, 0], [0, 0], [half, half], [0, 0]], mode="reflect")
    return to_pixels(sum(per_face(weights[:, k]) * padded[:, :, k:k + width] for k in range(2 * half + 1)))


def drop_holes(images, holes, active, fill):
    """Rectangles `holes` (n, k, 4: x_min, y_min, x_max, y_max, the max excluded) of each face set
    to `fill` (a number, or one per channel) where `active` (n, k): albumentations' cutout."""
    height, width = images.shape[1], images.shape[2]
    ys = ops.arange(height, dtype="float32")[None, None, :, None]
    xs = ops.arange(width, dtype="float32")[None, None, None, :]
    # (n, k, 1, 1) each; expand_dims, since TensorFlow's graph mode drops the new axes of holes[:, :, i, None, None]
    x_min, y_min, x_max, y_max = (ops.expand_dims(holes[:, :, i], (2, 3)) for i in range(4))
    inside = (ys >= y_min) & (ys < y_max) & (xs >= x_min) & (xs < x_max) & ops.expand_dims(active, (2, 3))
    dropped = ops.any(inside, axis=1)[..., None]
    return ops.where(dropped, ops.convert_to_tensor(fill, "float32"), images)


# --- The preset's transforms -----------------------------------------------------------------------

def floats(values) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def ints(values) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def per_axis(ranges: dict | None, convert) -> dict[str, tuple] | None:
    """albumentations' {"x": range, "y": range} with each range converted (None stays None)."""
    return None if ranges is None else {axis: convert(ranges[axis]) for axis in "xy"}


class Geometric:
    """A transform that moves pixels: forward(draw, height, width) gives its affine map per face
    (input -> output) and the Edge of what it reads."""

    interpolation: int | None = None  # None: reads whole pixels only (a flip)
    border = "replicate"  # how it reads beyond its input's edge (a flip never does)

    def __init__(self, transform):
        self.p = float(transform.p)

    def reads_through(self, earlier: Geometric) -> bool:
        """Whether this transform, applied after `earlier`, is resampled together with it. Not
        after a constant or wrapped border, nor with a wrapped one: their output has edges inside
        the face (the fill's, the seam where the opposite side starts), which albumentations
        resamples once more with the next transform; one resampling for both would draw those
        edges otherwise (by tens of grey levels along them)."""
        return earlier.border not in ("constant", "wrap") and self.border != "wrap"


class Flip(Geometric):
    def __init__(self, transform, horizontal: bool):
        super().__init__(transform)
        self.horizontal = horizontal

    def forward(self, draw: Draw, height: int, width: int):
        return flip_matrix(height, width, self.horizontal), Edge()


class ResizedCrop(Geometric):
    """RandomResizedCrop: a crop of a random area share and aspect ratio, resized to the face."""

    TRIES = 10  # albumentations' attempts at a crop that fits, before its central fallback

    def __init__(self, transform):
        super().__init__(transform)
        self.size = ints(transform.size)
        self.scale = floats(transform.scale)
        self.ratio = floats(transform.ratio)
        self.interpolation = int(transform.interpolation)

    def check_size(self, height: int, width: int) -> None:
        if self.size != (height, width):
            raise ConfigError(f"augmentation.transform: RandomResizedCrop's size {list(self.size)} is not the faces' "
                              f"[{height}, {width}]; on the device the crop is resized to the face's own size")

    def forward(self, draw: Draw, height: int, width: int):
        self.check_size(height, width)
        area = float(height * width)
        target = draw.uniform(self.scale[0] * area, self.scale[1] * area, (self.TRIES,))
        ratio = ops.exp(draw.uniform(math.log(self.ratio[0]), math.log(self.ratio[1]), (self.TRIES,)))
        crop_w, crop_h = ops.round(ops.sqrt(target * ratio)), ops.round(ops.sqrt(target / ratio))
        fits = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
        first = ops.expand_dims(ops.argmax(ops.cast(fits, "int32"), axis=1), 1)
        crop_w = ops.take_along_axis(crop_w, first, axis=1)[:, 0]
        crop_h = ops.take_along_axis(crop_h, first, axis=1)[:, 0]
        fallback_w, fallback_h = self.central_crop(height, width)
        any_fit = ops.any(fits, axis=1)
        crop_w = ops.where(any_fit, crop_w, float(fallback_w))
        crop_h = ops.where(any_fit, crop_h, float(fallback_h))
        x_min = ops.where(any_fit, ops.floor(draw.uniform() * (width - crop_w + 1.0)), (width - fallback_w) // 2)
        y_min = ops.where(any_fit, ops.floor(draw.uniform() * (height - crop_h + 1.0)), (height - fallback_h) // 2)
        # cv2.resize reads within the crop, its edge repeated beyond (a crop's edge in the face)
        window = (x_min, y_min, x_min + crop_w - 1.0, y_min + crop_h - 1.0)
        return resized_crop_matrix(x_min, y_min, crop_w, crop_h, height, width), Edge(window=window)

    def central_crop(self, height: int, width: int) -> tuple[int, int]:
        """(width, height) of albumentations' fallback, the largest central crop within the ratios."""
        if width / height < self.ratio[0]:
            return width, round(width / self.ratio[0])
        if width / height > self.ratio[1]:
            return round(height * self.ratio[1]), height
        return width, height


class Affine(Geometric):
    """Affine: scale, rotation, shear and translation about the face's centre."""

    def __init__(self, transform):
        super().__init__(transform)
        if transform.fit_output:
            raise ConfigError("augmentation.transform: Affine with fit_output=true changes the face's size; "
                              "use trainer.augment_on=host")
        self.scale = per_axis(transform.scale, floats)
        self.keep_ratio, self.balanced_scale = bool(transform.keep_ratio), bool(transform.balanced_scale)
        self.translate_percent = per_axis(transform.translate_percent, floats)
        self.translate_px = per_axis(transform.translate_px, ints)
        self.rotate = floats(transform.rotate)
        self.shear = per_axis(transform.shear, floats)
        self.interpolation = int(transform.interpolation)
        self.border, self.fill = BORDERS[int(transform.border_mode)], transform.fill

    def draw_scale(self, draw: Draw, low: float, high: float):
        if not self.balanced_scale or not low < 1.0 < high:
            return draw.uniform(low, high)
        return ops.where(draw.chance(0.5), draw.uniform(low, 1.0), draw.uniform(1.0, high))

    def forward(self, draw: Draw, height: int, width: int):
        scale_x = self.draw_scale(draw, *self.scale["x"])
        scale_y = scale_x if self.keep_ratio else self.draw_scale(draw, *self.scale["y"])
        if self.translate_px is not None:
            translate_x, translate_y = (draw.integers(*self.translate_px[axis]) for axis in "xy")
        elif self.translate_percent is not None:  # int(share * size): towards zero
            translate_x, translate_y = (ops.trunc(draw.uniform(*self.translate_percent[axis]) * size)
                                        for axis, size in (("x", width), ("y", height)))
        else:
            translate_x = translate_y = 0.0
        rotate = draw.uniform(*self.rotate)
        shear_x, shear_y = (-draw.uniform(*self.shear[axis]) for axis in "xy")
        matrix = affine_matrix(scale_x, scale_y, translate_x, translate_y, rotate, shear_x, shear_y, height, width)
        return matrix, Edge(self.border, self.fill)


class Pixel:
    """A transform of the pixels' values: apply(images, draw) gives every face transformed."""

    def __init__(self, transform):
        self.p = float(transform.p)


class BrightnessContrast(Pixel):
    def __init__(self, transform):
        super().__init__(transform)
        if transform.ensure_safe_range:
            raise ConfigError("augmentation.transform: RandomBrightnessContrast with ensure_safe_range=true has no "
                              "on-device form; use trainer.augment_on=host")
        self.brightness = floats(transform.brightness_limit)
        self.contrast = floats(transform.contrast_limit)
        self.by_max = bool(transform.brightness_by_max)

    def apply(self, images, draw: Draw):
        alpha = 1.0 + draw.uniform(*self.contrast)
        beta = draw.uniform(*self.brightness)
        beta = beta * 255.0 if self.by_max else beta * ops.mean(images, axis=(1, 2, 3))
        return brightness_contrast(images, alpha, beta)


class GaussianBlur(Pixel):
    def __init__(self, transform):
        super().__init__(transform)
        self.sizes = ints(transform.blur_limit)  # 0: from sigma, as PIL
        self.sigma = floats(transform.sigma_limit)
        self.largest = max(self.odd(self.sizes[1]), self.odd(int(self.sigma[1] * 3.5) * 2 + 1))

    @staticmethod
    def odd(size: int) -> int:
        return size + 1 if size % 2 == 0 else size

    def apply(self, images, draw: Draw):
        sigma = draw.uniform(*self.sigma)
        size = draw.integers(*self.sizes)
        size = ops.where(size == 0, ops.floor(sigma * 3.5) * 2.0 + 1.0, size)
        size = ops.where(ops.mod(size, 2.0) == 0, size + 1.0, size)
        return gaussian_blur(images, sigma, size, self.largest)


class GaussNoise(Pixel):
    def __init__(self, transform):
        super().__init__(transform)
        if float(transform.noise_scale_factor) != 1.0:
            raise ConfigError("augmentation.transform: GaussNoise with noise_scale_factor other than 1 has no "
                              "on-device form; use trainer.augment_on=host")
        self.std = floats(transform.std_range)
        self.mean = floats(transform.mean_range)
        self.per_channel = bool(transform.per_channel)

    def apply(self, images, draw: Draw):
        std, mean = draw.uniform(*self.std) * 255.0, draw.uniform(*self.mean) * 255.0
        height, width, channels = images.shape[1], images.shape[2], images.shape[3]
        noise = draw.normal((height, width, channels if self.per_channel else 1))
        return add_noise(images, noise * per_face(std) + per_face(mean))


class CoarseDropout(Pixel):
    def __init__(self, transform):
        super().__init__(transform)
        if isinstance(transform.fill, str):
            raise ConfigError(f"augmentation.transform: CoarseDropout's fill {transform.fill!r} has no on-device "
                              "form (a number or one per channel has); use trainer.augment_on=host")
        self.holes = ints(transform.num_holes_range)
        self.heights = tuple(transform.hole_height_range)
        self.widths = tuple(transform.hole_width_range)
        self.fill = np.asarray(transform.fill, dtype=np.float32)

    @staticmethod
    def sides(draw: Draw, limits, size: int, count: int):
        """Hole sides: whole pixels in [low, high] when the range is in pixels, else int(size * share)."""
        if limits[1] >= 1:
            return draw.integers(float(limits[0]), float(min(limits[1], size)), (count,))
        return ops.floor(draw.uniform(float(limits[0]), float(limits[1]), (count,)) * size)

    def apply(self, images, draw: Draw):
        height, width = images.shape[1], images.shape[2]
        most = self.holes[1]
        count = draw.integers(*self.holes)
        hole_h, hole_w = self.sides(draw, self.heights, height, most), self.sides(draw, self.widths, width, most)
        y_min = ops.floor(draw.uniform(shape=(most,)) * (height - hole_h + 1.0))
        x_min = ops.floor(draw.uniform(shape=(most,)) * (width - hole_w + 1.0))
        holes = ops.stack([x_min, y_min, x_min + hole_w, y_min + hole_h], axis=-1)
        active = ops.arange(most, dtype="float32")[None, :] < ops.reshape(count, (-1, 1))
        return drop_holes(images, holes, active, self.fill)


class OneOf(Pixel):
    """One of its transforms, chosen in proportion to their p, with probability p."""

    def __init__(self, transform, choices: list[Pixel]):
        super().__init__(transform)
        self.choices = choices
        total = sum(choice.p for choice in choices)
        self.bounds = np.cumsum([choice.p / total for choice in choices])[:-1].tolist()

    def apply(self, images, draw: Draw):
        pick = draw.uniform()
        which = sum(ops.cast(pick >= bound, "int32") for bound in self.bounds) if self.bounds else ops.zeros_like(pick)
        out = images
        for index, choice in enumerate(self.choices):
            out = ops.where(per_face(which == index), choice.apply(images, draw), out)
        return out


GEOMETRIC = {
    "HorizontalFlip": lambda t: Flip(t, horizontal=True),
    "VerticalFlip": lambda t: Flip(t, horizontal=False),
    "RandomResizedCrop": ResizedCrop,
    "Affine": Affine,
}
PIXEL = {
    "RandomBrightnessContrast": BrightnessContrast,
    "GaussianBlur": GaussianBlur,
    "GaussNoise": GaussNoise,
    "CoarseDropout": CoarseDropout,
}


def unsupported(name: str) -> ConfigError:
    return ConfigError(f"augmentation.transform: {name} has no on-device form (trainer.augment_on=device supports "
                       f"{', '.join([*GEOMETRIC, *PIXEL, 'OneOf'])}); use trainer.augment_on=host")


def pixel_transform(transform) -> Pixel:
    name = type(transform).__name__
    if name == "OneOf":
        return OneOf(transform, [pixel_transform(choice) for choice in transform.transforms])
    if name in PIXEL:
        return PIXEL[name](transform)
    if name in GEOMETRIC:
        raise ConfigError(f"augmentation.transform: {name} inside OneOf has no on-device form (geometric "
                          "transforms are composed into one map there); use trainer.augment_on=host")
    raise unsupported(name)


class WarpStage:
    """Consecutive geometric transforms, each applied with its probability, resampled once (resample)."""

    def __init__(self, transforms: list[Geometric]):
        self.transforms = transforms
        asked = [t.interpolation for t in transforms if t.interpolation is not None]
        self.interpolation = "nearest" if asked and all(i == NEAREST for i in asked) else "bilinear"
        self.exact = not asked  # flips alone move whole pixels

    def __call__(self, images, draw: Draw):
        height, width = images.shape[1], images.shape[2]
        whole = (0.0, 0.0, width - 1.0, height - 1.0)
        moves = []
        for transform in self.transforms:
            applied = draw.chance(transform.p)
            matrix, edge = transform.forward(draw, height, width)
            if edge.window is not None:  # a face left as it is reads all of itself
                edge = edge._replace(window=tuple(ops.where(applied, v, all_) for v, all_ in zip(edge.window, whole)))
            moves.append((invert(gated(applied, matrix)), edge))
        out = resample(images, moves, self.interpolation)
        return out if self.exact else to_pixels(out)


class PixelStage:
    def __init__(self, transform: Pixel):
        self.transform = transform

    def __call__(self, images, draw: Draw):
        applied = draw.chance(self.transform.p)
        return ops.where(per_face(applied), self.transform.apply(images, draw), images)


class DevicePlan:
    """A preset as stages of batched ops: (n, H, W, C) float32 faces of whole grey levels -> the same, augmented."""

    def __init__(self, serialized: dict[str, Any]):
        compose_ = build_transform(serialized)
        if type(compose_).__name__ != "Compose":
            raise unsupported(type(compose_).__name__)
        self.p = float(compose_.p)
        # Each pixel transform is a stage; consecutive geometric ones are gathered into one
        # WarpStage where each reads through the one before (Geometric.reads_through).
        groups: list[list[Geometric] | Pixel] = []
        for transform in compose_.transforms:
            name = type(transform).__name__
            if name not in GEOMETRIC:
                groups.append(pixel_transform(transform))
                continue
            geometric = GEOMETRIC[name](transform)
            if groups and isinstance(groups[-1], list) and geometric.reads_through(groups[-1][-1]):
                groups[-1].append(geometric)
            else:
                groups.append([geometric])
        self.stages = [WarpStage(group) if isinstance(group, list) else PixelStage(group) for group in groups]

    def __call__(self, images, generator: keras.random.SeedGenerator):
        draw = Draw(generator, ops.shape(images)[0])
        out = images
        for stage in self.stages:
            out = stage(out, draw)
        if self.p < 1.0:
            out = ops.where(per_face(draw.chance(self.p)), out, images)
        return out


def check_device_transform(serialized: dict[str, Any] | None, face_size: int) -> None:
    """ConfigError for a preset (or a transform's setting) with no on-device form for faces of
    face_size x face_size pixels, or one albumentations itself refuses (check_transform)."""
    check_transform(serialized)
    if serialized:
        for stage in DevicePlan(serialized).stages:
            for transform in getattr(stage, "transforms", []):
                if isinstance(transform, ResizedCrop):
                    transform.check_size(face_size, face_size)


class AugmentFaces(keras.layers.Layer):
    """The preset's augmentation of a batch of faces while training (training=True); the faces as
    they are otherwise. (n, H, W, C) faces of 0..255 values -> the same, float32 whole grey levels.

    Computes in float32 whatever the dtype policy (mixed precision would round grey levels)."""

    def __init__(self, transform: dict[str, Any], seed: int, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.transform = transform
        self.seed = seed
        self.plan = DevicePlan(transform)
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, faces, training=False):
        faces = ops.cast(faces, "float32")
        return self.plan(faces, self.generator) if training else faces

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "transform": self.transform, "seed": self.seed}


def with_device_augmentation(model: keras.Model, transform: dict[str, Any], seed: int) -> keras.Model:
    """`model` behind an AugmentFaces layer named AUGMENT_LAYER: the model that fit trains when
    trainer.augment_on=device. Its outputs keep `model`'s names (the losses and metrics are named
    by them); face_model() gives `model` back, for everything after training."""
    faces = keras.Input(model.input_shape[1:], name="faces")
    outputs = model(AugmentFaces(transform, seed, name=AUGMENT_LAYER)(faces))
    if isinstance(outputs, dict):  # a nested model's outputs would otherwise all be named after it
        outputs = {name: keras.layers.Identity(name=name, dtype="float32")(output) for name, output in outputs.items()}
    return keras.Model(faces, outputs, name=model.name)


def face_model(model: keras.Model) -> keras.Model:
    """The model that predicts faces: the one behind a with_device_augmentation model's
    augmentation layer, else `model` itself."""
    names = [layer.name for layer in model.layers]
    return model.layers[names.index(AUGMENT_LAYER) + 1] if AUGMENT_LAYER in names else model


def device_variants(transform: dict[str, Any], seed: int, faces: np.ndarray, variants: int) -> np.ndarray:
    """(n, H, W, C) uint8 faces -> (n, variants, H, W, C) uint8, `variants` on-device augmentations
    of each, as a training run with this seed draws its first batches."""
    layer = AugmentFaces(transform, seed)
    drawn = [np.asarray(keras.ops.convert_to_numpy(layer(faces, training=True))) for _ in range(variants)]
    return np.stack(drawn, axis=1).astype(np.uint8)
