"""The look of one person: colours and styles that do not depend on the expression."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Color = tuple[int, int, int]  # BGR, 0..255

# Skin tones from very light to very dark (RGB, reversed to BGR when sampled).
_SKIN_RGB = np.array(
    [[255, 226, 204], [246, 205, 176], [234, 184, 146], [214, 158, 116], [186, 126, 86],
     [150, 98, 64], [116, 74, 48], [88, 56, 38]],
    dtype=np.float64,
)
_HAIR_BGR = np.array(
    [[22, 22, 26], [30, 38, 58], [40, 66, 104], [90, 150, 200], [120, 190, 230], [40, 70, 165],
     [150, 150, 150], [215, 215, 220], [170, 90, 40], [170, 110, 225], [60, 140, 60]],
    dtype=np.float64,
)
_HAIR_WEIGHTS = np.array([0.22, 0.18, 0.14, 0.08, 0.06, 0.07, 0.08, 0.05, 0.04, 0.04, 0.04])
_IRIS_BGR = np.array(
    [[30, 60, 100], [20, 35, 55], [160, 120, 60], [80, 130, 80], [120, 120, 110], [50, 100, 120]],
    dtype=np.float64,
)

HAIR_STYLES = ("bald", "short", "long", "fringe", "curly", "bun", "side_part")
_HAIR_STYLE_WEIGHTS = np.array([0.1, 0.22, 0.22, 0.14, 0.12, 0.08, 0.12])


@dataclass(frozen=True)
class Appearance:
    """Colours (BGR int tuples) and style choices for one synthetic person."""

    skin: Color
    shade: Color  # skin in shadow: folds, nose side, ear inside
    lips: Color
    lip_line: Color  # dark outline that keeps the mouth readable on dark skin
    mouth_inside: Color
    teeth: Color
    sclera: Color
    iris: Color
    brows: Color
    lid_line: Color
    hair: Color
    hair_style: str
    hair_thickness: float  # face units
    hair_params: tuple[float, float, float]  # style-specific: hairline height, side height, part tilt
    clothes: Color
    glasses: Color | None
    glasses_round: bool
    glasses_width: float
    blush: Color | None
    freckles: bool
    fold_base: float  # 0..0.25: how visible the smile folds are on a neutral face (age)


def _bgr(values: np.ndarray) -> Color:
    """Clip to 0..255 and turn into a tuple of Python ints, which OpenCV drawing wants."""
    v = np.clip(np.round(values), 0, 255).astype(int)
    return int(v[0]), int(v[1]), int(v[2])


def _mix(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    return (1.0 - t) * a + t * b


def _skin(rng: np.random.Generator) -> np.ndarray:
    """A BGR skin colour, uniformly spread over the light-to-dark range, with a little jitter."""
    t = rng.uniform(0.0, len(_SKIN_RGB) - 1)
    i = min(int(t), len(_SKIN_RGB) - 2)
    rgb = _mix(_SKIN_RGB[i], _SKIN_RGB[i + 1], t - i) + rng.normal(0.0, 6.0, 3)
    return rgb[::-1]


def sample_appearance(rng: np.random.Generator) -> Appearance:
    """A random person: skin, hair, eye colour, clothes, glasses, blush, freckles."""
    skin = _skin(rng)
    luma = float(skin @ np.array([0.114, 0.587, 0.299]))
    hair = _HAIR_BGR[rng.choice(len(_HAIR_BGR), p=_HAIR_WEIGHTS)] + rng.normal(0.0, 8.0, 3)
    # Brows must stay darker than the skin even for fair hair on dark skin, or they vanish.
    brow_target = min(0.5 * luma, 90.0)
    brows = np.minimum(hair, skin) * 0.7
    brows = brows * min(1.0, brow_target / max(float(brows @ np.array([0.114, 0.587, 0.299])), 1.0))
    red = np.array([70.0, 60.0, 175.0])
    lips = _mix(skin, red, rng.uniform(0.25, 0.5)) * rng.uniform(0.72, 0.88)
    style = str(rng.choice(HAIR_STYLES, p=_HAIR_STYLE_WEIGHTS))
    glasses = None
    if rng.random() < 0.2:
        glasses = _bgr(rng.choice([np.array([20.0, 20.0, 20.0]), np.array([40.0, 60.0, 90.0]),
                                   np.array([170.0, 170.0, 175.0]), rng.uniform(0, 255, 3)]))
    blush = _bgr(_mix(skin, np.array([130.0, 120.0, 235.0]), rng.uniform(0.2, 0.35))) if rng.random() < 0.3 else None
    return Appearance(
        skin=_bgr(skin),
        shade=_bgr(skin * rng.uniform(0.62, 0.75)),
        lips=_bgr(lips),
        lip_line=_bgr(lips * 0.55),
        mouth_inside=_bgr(np.array([35.0, 25.0, 70.0]) * rng.uniform(0.6, 1.2)),
        teeth=_bgr(np.array([225.0, 235.0, 242.0]) - rng.uniform(0, 30)),
        sclera=_bgr(np.array([238.0, 242.0, 246.0]) - rng.uniform(0, 25, 3)),
        iris=_bgr(_IRIS_BGR[rng.integers(len(_IRIS_BGR))] + rng.normal(0.0, 10.0, 3)),
        brows=_bgr(brows),
        lid_line=_bgr(np.minimum(skin * 0.3, 60.0)),
        hair=_bgr(hair),
        hair_style=style,
        hair_thickness=float(rng.uniform(0.08, 0.2) if style != "curly" else rng.uniform(0.2, 0.4)),
        hair_params=(float(rng.uniform(0.7, 0.88)), float(rng.uniform(0.05, 0.2)), float(rng.uniform(-0.15, 0.15))),
        clothes=_bgr(rng.uniform(0, 255, 3)),
        glasses=glasses,
        glasses_round=bool(rng.random() < 0.5),
        glasses_width=float(rng.uniform(0.015, 0.035)),
        blush=blush,
        freckles=bool(rng.random() < 0.1),
        fold_base=float(rng.uniform(0.0, 0.25)),
    )
