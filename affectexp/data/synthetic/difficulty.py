"""How hard the synthetic set is: the knobs behind `dataset.difficulty` and their presets.

`easy` is the original set (every knob at the value that draws no extra random numbers, so
its photos and lists are byte for byte what the generator wrote before the knobs existed).
`hard` moves each knob towards what makes real AffectNet hard to learn:

- strength: expressions spread towards neutral (AffectNet's web photos are mostly mild).
- confusion: every face is blended with its confusable neighbour's expression by up to this
  weight (fear/surprise, disgust/anger, contempt/neutral, sad/neutral, happy/neutral).
- label_noise: this share of the rows of every expression, in both lists, show the confusable
  neighbour's face while the list keeps the row's label: annotators disagreeing. The drawn
  expression of every row is written to `synthetic-truth.csv` beside the lists.
- max_yaw, max_pitch: head turned left/right and up/down (degrees; drawn as the face's
  foreshortening, landmarks and box follow).
- occlusion: share of faces with part of the face covered (a hand, a phone, a scarf, a
  microphone: a random blob over the eyes, mouth or a cheek).
- motion_blur: share of photos with a linear motion blur.
- jpeg_quality: the JPEG quality range [low, high).
- class_shares: relative counts of expression codes 0-7 in training.csv (None = balanced);
  `hard` uses AffectNet's manual training set (74,874 / 134,415 / 25,459 / 14,090 / 6,378 /
  3,803 / 24,882 / 3,750). validation.csv stays balanced, as AffectNet's is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from affectexp.errors import UserInputError

# Each expression code's most confusable neighbour (AffectNet's confusion matrices and the
# annotator agreement study put most disagreement on these pairs).
NEIGHBOUR = {0: 2, 1: 0, 2: 0, 3: 4, 4: 3, 5: 6, 6: 5, 7: 0}

AFFECTNET_MANUAL_TRAINING = (74874, 134415, 25459, 14090, 6378, 3803, 24882, 3750)


@dataclass(frozen=True)
class Difficulty:
    """The realism knobs of one generated set (see the module doc); defaults are `easy`."""

    strength: tuple[float, float] = (0.5, 1.0)
    confusion: float = 0.0
    label_noise: float = 0.0
    max_yaw: float = 0.0
    max_pitch: float = 0.0
    occlusion: float = 0.0
    motion_blur: float = 0.0
    jpeg_quality: tuple[int, int] = (60, 96)
    class_shares: tuple[float, ...] | None = None

    def as_dict(self) -> dict:
        """Plain data (lists, floats) for JSON markers and the cache's recorded config."""
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


PRESETS = {
    "easy": Difficulty(),
    "hard": Difficulty(
        strength=(0.2, 0.85),
        confusion=0.35,
        label_noise=0.12,
        max_yaw=35.0,
        max_pitch=20.0,
        occlusion=0.25,
        motion_blur=0.25,
        jpeg_quality=(20, 80),
        class_shares=tuple(float(c) for c in AFFECTNET_MANUAL_TRAINING),
    ),
}


def resolve_difficulty(name: str, overrides: dict | None = None) -> Difficulty:
    """The preset `name` with `overrides` (knob -> value) applied; a one-line error naming the
    config key for an unknown preset, knob or out-of-range value."""
    if name not in PRESETS:
        raise UserInputError(f"dataset.difficulty: {name!r} is not a difficulty; use one of {sorted(PRESETS)}")
    known = {f.name for f in fields(Difficulty)}
    values = asdict(PRESETS[name])
    for key, value in (overrides or {}).items():
        if key not in known:
            raise UserInputError(f"dataset.realism.{key}: no such knob; the knobs are {sorted(known)}")
        values[key] = value
    for key in ("strength", "jpeg_quality"):
        values[key] = tuple(values[key])
    if values["class_shares"] is not None:
        values["class_shares"] = tuple(float(v) for v in values["class_shares"])
    knobs = Difficulty(**values)
    _check(knobs)
    return knobs


def _check(d: Difficulty) -> None:
    low, high = d.strength
    if not 0.0 <= low <= high <= 1.0:
        raise UserInputError(f"dataset.realism.strength: {list(d.strength)}; use [low, high] with 0 <= low <= high <= 1")
    for key in ("confusion", "label_noise", "occlusion", "motion_blur"):
        if not 0.0 <= getattr(d, key) <= 1.0:
            raise UserInputError(f"dataset.realism.{key}: {getattr(d, key)}; use a share in [0, 1]")
    if not 0 <= d.max_yaw < 80 or not 0 <= d.max_pitch < 80:
        raise UserInputError("dataset.realism.max_yaw/max_pitch: use degrees in [0, 80)")
    q_low, q_high = d.jpeg_quality
    if not 1 <= q_low < q_high <= 101:
        raise UserInputError(f"dataset.realism.jpeg_quality: {list(d.jpeg_quality)}; use [low, high) in 1..101")
    if d.class_shares is not None and (len(d.class_shares) != 8 or min(d.class_shares) <= 0):
        raise UserInputError("dataset.realism.class_shares: give 8 positive relative counts (codes 0-7), or null")


def class_counts(per_class: int, shares: tuple[float, ...] | None, num_classes: int = 8) -> np.ndarray:
    """Rows per expression code, (num_classes,) int64, summing to per_class * num_classes:
    equal counts, or `shares` rounded by largest remainder (at least 1 row per code when the
    total allows it, so no class vanishes from a small set)."""
    total = per_class * num_classes
    if shares is None or total == 0:
        return np.full(num_classes, per_class, dtype=np.int64)
    p = np.asarray(shares, dtype=np.float64) / float(np.sum(shares))
    exact = p * total
    counts = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: total - counts.sum()]] += 1
    if total >= num_classes:
        while (counts == 0).any():  # take from the largest class
            counts[np.argmax(counts)] -= 1
            counts[np.argmin(counts)] += 1
    return counts
