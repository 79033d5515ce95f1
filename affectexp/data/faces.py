"""Cutting one face out of one image file: decode, crop the box, convert, resize."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# cv2 decodes JPEGs at 1/2, 1/4 or 1/8 scale through libjpeg's DCT scaling: far less work
# than a full decode when the face is much larger than the cache's size.
_REDUCED_FLAGS = {
    ("gray", 1): cv2.IMREAD_GRAYSCALE,
    ("gray", 2): cv2.IMREAD_REDUCED_GRAYSCALE_2,
    ("gray", 4): cv2.IMREAD_REDUCED_GRAYSCALE_4,
    ("gray", 8): cv2.IMREAD_REDUCED_GRAYSCALE_8,
    ("rgb", 1): cv2.IMREAD_COLOR,
    ("rgb", 2): cv2.IMREAD_REDUCED_COLOR_2,
    ("rgb", 4): cv2.IMREAD_REDUCED_COLOR_4,
    ("rgb", 8): cv2.IMREAD_REDUCED_COLOR_8,
}


class FaceError(Exception):
    """A row whose face cannot be produced; `reason` is the skipped-report's reason code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


@dataclass(frozen=True)
class FaceSpec:
    """What a face in the cache looks like and how it is cut out.

    size: output side in pixels; color: "gray" or "rgb"; margin: extra border on each side
    as a fraction of the box's width/height; square: widen the box's shorter side;
    out_of_bounds: "clamp" or "pad" for a box that leaves the image; reduced_decoding:
    allow 1/2-1/8 scale JPEG decoding when the face stays well above `size` pixels.
    """

    size: int = 96
    color: str = "gray"
    margin: float = 0.0
    square: bool = False
    out_of_bounds: str = "clamp"
    reduced_decoding: bool = True

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3


def expand_box(box: tuple[float, float, float, float], margin: float, square: bool) -> tuple[float, float, float, float]:
    """(x, y, w, h) grown by `margin` of its size on each side, then squared if asked."""
    x, y, w, h = box
    x, y, w, h = x - margin * w, y - margin * h, w * (1 + 2 * margin), h * (1 + 2 * margin)
    if square and w != h:
        side = max(w, h)
        x, y, w, h = x - (side - w) / 2, y - (side - h) / 2, side, side
    return x, y, w, h


# How much larger than the output the decoded box must stay. At 1x, box edges rounded to
# whole decoded pixels moved 32 px faces by 3 grey levels (mean absolute difference from a
# full decode); at 2x the difference is about 1 level and the speed-up nearly the same.
REDUCED_DECODING_HEADROOM = 2.0


def reduction_factor(box_w: float, box_h: float, size: int) -> int:
    """Largest JPEG scale-down (1, 2, 4, 8) that keeps the box REDUCED_DECODING_HEADROOM x `size`."""
    shorter = min(box_w, box_h)
    for factor in (8, 4, 2):
        if shorter / factor >= REDUCED_DECODING_HEADROOM * size:
            return factor
    return 1


def decode_image(data: np.ndarray, color: str, factor: int) -> np.ndarray:
    """Encoded bytes -> (H, W) uint8 gray or (H, W, 3) uint8 RGB; any format cv2 reads.

    The format is sniffed from the bytes, so a PNG behind a .jpg name, CMYK JPEGs and
    single-channel files all decode.
    """
    image = cv2.imdecode(data, _REDUCED_FLAGS[(color, factor)])
    if image is None:
        raise FaceError("unreadable_image", "not an image cv2 can decode")
    if color == "rgb":
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    return image


def crop_box(image: np.ndarray, box: tuple[float, float, float, float], out_of_bounds: str) -> np.ndarray:
    """The pixels of `box` (x = column, y = row); a box that leaves the image is clamped or padded."""
    height, width = image.shape[:2]
    x0, y0 = int(round(box[0])), int(round(box[1]))
    x1, y1 = int(round(box[0] + box[2])), int(round(box[1] + box[3]))
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if cx1 - cx0 < 2 or cy1 - cy0 < 2:
        raise FaceError("box_outside_image", f"box {box} in a {width}x{height} image")
    face = image[cy0:cy1, cx0:cx1]
    if out_of_bounds == "pad" and (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
        face = cv2.copyMakeBorder(face, cy0 - y0, y1 - cy1, cx0 - x0, x1 - cx1, cv2.BORDER_REPLICATE)
    return face


def resize_face(face: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size: INTER_AREA when shrinking (no aliasing), cubic when enlarging."""
    shrinking = face.shape[0] >= size and face.shape[1] >= size
    return cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def load_face(path: str, box: tuple[float, float, float, float], spec: FaceSpec) -> np.ndarray:
    """One face from one image file as (size, size, channels) uint8.

    Raises FaceError with reason "missing_file", "unreadable_image" or "box_outside_image".
    """
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as error:
        raise FaceError("missing_file", str(error)) from None
    if data.size == 0:
        raise FaceError("unreadable_image", "empty file")
    box = expand_box(box, spec.margin, spec.square)
    factor = reduction_factor(box[2], box[3], spec.size) if spec.reduced_decoding else 1
    image = decode_image(data, spec.color, factor)
    scaled_box = tuple(v / factor for v in box)
    face = resize_face(crop_box(image, scaled_box, spec.out_of_bounds), spec.size)
    return face.reshape(spec.size, spec.size, spec.channels)
