"""Cutting one face out of one image: read, decode, optionally align, crop the box, resize."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from affectexp.data.affectnet_layout import LEFT_EYE, RIGHT_EYE

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
    allow 1/2-1/8 scale JPEG decoding when the face stays well above `size` pixels;
    align: turn the face so that its eyes are level (needs the row's landmarks).
    """

    size: int = 96
    color: str = "gray"
    margin: float = 0.0
    square: bool = False
    out_of_bounds: str = "clamp"
    reduced_decoding: bool = True
    align: bool = False

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    @classmethod
    def from_content(cls, content: dict) -> FaceSpec:
        """The spec of a preprocessing config's content sections (tasks/preprocess.content_config:
        what a cache stores as its "config" attribute and a logged model as its face spec)."""
        return cls(size=content["cache"]["size"], color=str(content["cache"]["color"]), **content["faces"])


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


def read_image_bytes(path: str, span: tuple[int, int] | None = None) -> np.ndarray:
    """The encoded image: the whole file, or `span` = (offset, length) bytes of it; (n,) uint8."""
    try:
        if span is None:
            data = np.fromfile(path, dtype=np.uint8)
        else:
            with open(path, "rb") as handle:
                handle.seek(span[0])
                data = np.frombuffer(handle.read(span[1]), dtype=np.uint8)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as error:
        raise FaceError("missing_file", str(error)) from None
    if data.size == 0:
        raise FaceError("unreadable_image", "empty file")
    return data


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


def decode_pixel_text(data: np.ndarray, color: str) -> np.ndarray:
    """Space-separated grey values of a square image (FER2013's `pixels`) -> (side, side) uint8
    gray or (side, side, 3) uint8 RGB."""
    try:
        values = np.array(data.tobytes().split(), dtype=np.int32)
    except ValueError:
        raise FaceError("unreadable_image", "pixel string holds something other than numbers") from None
    side = math.isqrt(values.size)
    if side < 2 or side * side != values.size or values.min() < 0 or values.max() > 255:
        raise FaceError("unreadable_image", f"{values.size} values are not the grey levels of a square image")
    gray = values.astype(np.uint8).reshape(side, side)
    return gray if color == "gray" else cv2.cvtColor(gray, cv2.COLOR_GRAY2RGB)


def _pixel_edges(box: tuple[float, float, float, float]) -> tuple[int, int, int, int]:
    """A box's (x0, y0, x1, y1) rounded to whole pixels; x1, y1 exclusive."""
    return (int(round(box[0])), int(round(box[1])), int(round(box[0] + box[2])), int(round(box[1] + box[3])))


def _clamped_edges(box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    """The part of the box inside a width x height image, in whole pixels; FaceError if < 2 px."""
    x0, y0, x1, y1 = _pixel_edges(box)
    cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if cx1 - cx0 < 2 or cy1 - cy0 < 2:
        raise FaceError("box_outside_image", f"box {box} in a {width}x{height} image")
    return cx0, cy0, cx1, cy1


def crop_box(image: np.ndarray, box: tuple[float, float, float, float], out_of_bounds: str) -> np.ndarray:
    """The pixels of `box` (x = column, y = row); a box that leaves the image is clamped or padded."""
    height, width = image.shape[:2]
    x0, y0, x1, y1 = _pixel_edges(box)
    cx0, cy0, cx1, cy1 = _clamped_edges(box, width, height)
    face = image[cy0:cy1, cx0:cx1]
    if out_of_bounds == "pad" and (cx0, cy0, cx1, cy1) != (x0, y0, x1, y1):
        face = cv2.copyMakeBorder(face, cy0 - y0, y1 - cy1, cx0 - x0, x1 - cx1, cv2.BORDER_REPLICATE)
    return face


def eye_angle(landmarks: np.ndarray) -> float:
    """eye_line_angle of the eye centres of (68, 2) (x, y) landmarks (points 36-41 and 42-47)."""
    return eye_line_angle(landmarks[LEFT_EYE].mean(axis=0), landmarks[RIGHT_EYE].mean(axis=0))


def eye_line_angle(left: Sequence[float], right: Sequence[float]) -> float:
    """Degrees from the image-left eye's centre (x, y) to the image-right eye's; 0 when level,
    positive when the image-right eye is lower."""
    return math.degrees(math.atan2(right[1] - left[1], right[0] - left[0]))


def aligned_crop(image: np.ndarray, box: tuple[float, float, float, float], angle: float,
                 out_of_bounds: str) -> np.ndarray:
    """The pixels of `box` after turning the image about the box's centre by `angle` degrees
    (eye_angle: until the eyes are level).

    One cv2.warpAffine both rotates and cuts out the box, so the rest of the image is never
    rotated. With "clamp" the box is first clipped to the image; corners that the rotation
    brings in from outside the image repeat its border pixels.
    """
    if out_of_bounds == "clamp":
        x0, y0, x1, y1 = _clamped_edges(box, image.shape[1], image.shape[0])
        box = (float(x0), float(y0), float(x1 - x0), float(y1 - y0))
    x, y, w, h = box
    # cv2 puts pixel centres at integer coordinates: the box's centre pixel is at +w/2 - 0.5.
    matrix = cv2.getRotationMatrix2D((x + w / 2 - 0.5, y + h / 2 - 0.5), angle, 1.0)
    matrix[:, 2] -= (x, y)
    size = (max(2, int(round(w))), max(2, int(round(h))))
    return cv2.warpAffine(image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def resize_face(face: np.ndarray, size: int) -> np.ndarray:
    """Resize to size x size: INTER_AREA when shrinking (no aliasing), cubic when enlarging."""
    shrinking = face.shape[0] >= size and face.shape[1] >= size
    return cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC)


def has_box(box: tuple[float, float, float, float]) -> bool:
    """False for a row without a box (NaN), whose face is the whole image (pre-cropped sources)."""
    return all(math.isfinite(v) for v in box)


def load_face(path: str, box: tuple[float, float, float, float], spec: FaceSpec,
              landmarks: np.ndarray | None = None, span: tuple[int, int] | None = None) -> np.ndarray:
    """One face as (size, size, channels) uint8.

    path: an image file, or with `span` = (offset, length) a file holding the face's grey
    values as text at that place (FER2013). box: (x, y, w, h) in the image's pixels, NaN for
    the whole image. landmarks: (68, 2) float (x, y), used when spec.align; None crops unaligned.
    Raises FaceError with reason "missing_file", "unreadable_image" or "box_outside_image".
    """
    data = read_image_bytes(path, span)
    boxed = has_box(box)
    if boxed:
        box = expand_box(box, spec.margin, spec.square)
    if span is not None:
        image, factor = decode_pixel_text(data, spec.color), 1
    else:
        factor = reduction_factor(box[2], box[3], spec.size) if spec.reduced_decoding and boxed else 1
        image = decode_image(data, spec.color, factor)
    if boxed:
        box = tuple(v / factor for v in box)
    else:
        box = expand_box((0.0, 0.0, float(image.shape[1]), float(image.shape[0])), spec.margin, spec.square)
    return cut_face(image, box, spec, eye_angle(landmarks) if spec.align and landmarks is not None else None)


def cut_face(image: np.ndarray, box: tuple[float, float, float, float], spec: FaceSpec,
             angle: float | None = None) -> np.ndarray:
    """The face in `box` of a decoded image (gray (H, W) or RGB (H, W, 3), as spec.color says),
    as (size, size, channels) uint8: turned by `angle` degrees first when given (eye_angle), then
    cut out by spec.out_of_bounds' rule and resized. `box` is already grown by the margin and
    squared (expand_box). Preprocessing (load_face) and prediction on photos (inference) both
    cut their faces here, so a photo's face is what the model was trained on."""
    if angle is not None:
        face = aligned_crop(image, box, angle, spec.out_of_bounds)
    else:
        face = crop_box(image, box, spec.out_of_bounds)
    return resize_face(face, spec.size).reshape(spec.size, spec.size, spec.channels)
