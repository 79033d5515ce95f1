"""Expression parameters: what each AffectNet code does to mouth, brows and eyes.

All distances are in face units (the face's half-width is about 1, see ``geometry``); positive
"lift"/"raise" values move a feature up on screen. Left/right are the image's left/right.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from affectexp.data.affectnet_layout import NOT_ANNOTATED
from affectexp.data.synthetic.difficulty import NEIGHBOUR

NUM_EXPRESSIONS = 8  # codes 0..7 are expressions; 8 None, 9 Uncertain, 10 Non-Face
NON_FACE = 10


@dataclass(frozen=True)
class Expression:
    """Displacements of the facial features from a neutral face (all floats, face units)."""

    curve_left: float = 0.0  # mouth-corner lift, image-left corner (+ up: smile)
    curve_right: float = 0.0
    mouth_open: float = 0.0  # gap between the inner lips at the centre
    mouth_width: float = 0.0  # relative change of the mouth's half-width (-0.3 = 30% narrower)
    mouth_round: float = 0.0  # 0 = stretched box-like opening, 1 = round "O"
    lip_raise_left: float = 0.0  # upper lip pulled up on one side (disgust snarl)
    lip_raise_right: float = 0.0
    lip_press: float = 0.0  # 0..1, thin pressed lips (anger)
    teeth_upper: float = 0.0  # >0.5 shows the upper teeth when the mouth is open
    teeth_lower: float = 0.0
    brow_raise_left: float = 0.0  # whole brow up (+) or down (-)
    brow_raise_right: float = 0.0
    brow_inner: float = 0.0  # inner brow end up (+: sad, fear) or down (-: anger "V")
    brow_in: float = 0.0  # inner brow ends drawn toward the nose
    eye_open: float = 0.0  # upper-lid opening change (+ wide, - narrowed)
    eye_squint: float = 0.0  # 0..1, lower lid raised
    nose_wrinkle: float = 0.0  # 0..1, lines across the nose bridge, nostrils up
    cheek_raise: float = 0.0  # 0..1, smile folds beside the mouth
    smirk_crease: float = 0.0  # -1..1, crease at one mouth corner (- left, + right)

    def blended(self, other: Expression, weight: float) -> Expression:
        """(1 - weight) * self + weight * other, field by field (mixed expressions, codes 8/9)."""
        return Expression(
            *((1.0 - weight) * getattr(self, f.name) + weight * getattr(other, f.name) for f in fields(self))
        )


def _prototype(rng: np.random.Generator, code: int) -> Expression:
    """The full-strength expression for one code; a few codes come in variants (open/closed)."""
    side = 1.0 if rng.random() < 0.5 else -1.0  # which side carries an asymmetric movement
    if code == 0:  # neutral
        return Expression()
    if code == 1:  # happy: both corners up, wider mouth, cheeks up, often teeth
        if rng.random() < 0.5:
            return Expression(curve_left=0.22, curve_right=0.22, mouth_width=0.22, eye_squint=0.55,
                              cheek_raise=1.0, brow_raise_left=0.02, brow_raise_right=0.02)
        return Expression(curve_left=0.22, curve_right=0.22, mouth_width=0.25, mouth_open=0.16,
                          mouth_round=0.55, teeth_upper=1.0, eye_squint=0.6, cheek_raise=1.0)
    if code == 2:  # sad: corners down, inner brows up, drooping lids
        return Expression(curve_left=-0.16, curve_right=-0.16, mouth_width=-0.12, lip_press=0.3,
                          brow_inner=0.16, brow_in=0.04, eye_open=-0.035)
    if code == 3:  # surprise: round open mouth, brows high, eyes wide
        return Expression(mouth_open=0.42, mouth_round=1.0, mouth_width=-0.4, brow_raise_left=0.16,
                          brow_raise_right=0.16, eye_open=0.075)
    if code == 4:  # fear: brows up and together, eyes wide, mouth stretched open sideways
        return Expression(curve_left=-0.05, curve_right=-0.05, mouth_open=0.15, mouth_round=0.0,
                          mouth_width=0.3, teeth_lower=float(rng.random() < 0.6), brow_raise_left=0.09,
                          brow_raise_right=0.09, brow_inner=0.1, brow_in=0.1, eye_open=0.075)
    if code == 5:  # disgust: upper lip raised on one side, wrinkled nose, brows lowered, asymmetric
        strong, weak = 0.14, 0.05
        return Expression(curve_left=-0.07, curve_right=-0.07, mouth_open=0.03, mouth_round=0.3,
                          lip_raise_left=strong if side < 0 else weak,
                          lip_raise_right=strong if side > 0 else weak, teeth_upper=1.0,
                          brow_raise_left=-0.06, brow_raise_right=-0.06, brow_inner=-0.03, brow_in=0.04,
                          eye_squint=0.7, eye_open=-0.03, nose_wrinkle=1.0)
    if code == 6:  # anger: brows down and in (V), narrowed eyes; lips pressed or teeth bared
        common = dict(brow_raise_left=-0.08, brow_raise_right=-0.08, brow_inner=-0.16, brow_in=0.1,
                      eye_open=-0.045, eye_squint=0.35)
        if rng.random() < 0.5:
            return Expression(curve_left=-0.04, curve_right=-0.04, mouth_width=-0.18, lip_press=1.0, **common)
        return Expression(curve_left=-0.03, curve_right=-0.03, mouth_open=0.16, mouth_round=0.0,
                          mouth_width=0.05, teeth_upper=1.0, teeth_lower=1.0, lip_press=0.5, **common)
    if code == 7:  # contempt: one corner up (smirk), a crease there, slight lid tension
        return Expression(curve_left=0.2 if side < 0 else -0.01, curve_right=0.2 if side > 0 else -0.01,
                          mouth_width=0.04, lip_press=0.3, lip_raise_left=0.03 if side < 0 else 0.0,
                          lip_raise_right=0.03 if side > 0 else 0.0, smirk_crease=side, eye_squint=0.15)
    raise ValueError(f"expression code {code}: no prototype (expressions are 0..{NUM_EXPRESSIONS - 1})")


# Standard deviation of the per-face noise on each field: enough that no two faces of a class
# are the same, small enough that classes stay apart at the weakest strength (0.5).
_NOISE = Expression(
    curve_left=0.025, curve_right=0.025, mouth_open=0.012, mouth_width=0.05, mouth_round=0.1,
    lip_raise_left=0.008, lip_raise_right=0.008, lip_press=0.1, teeth_upper=0.0, teeth_lower=0.0,
    brow_raise_left=0.018, brow_raise_right=0.018, brow_inner=0.018, brow_in=0.012, eye_open=0.012,
    eye_squint=0.08, nose_wrinkle=0.05, cheek_raise=0.08, smirk_crease=0.0,
)


def sample_expression(rng: np.random.Generator, code: int, strength_range: tuple[float, float] = (0.5, 1.0),
                      confusion: float = 0.0) -> tuple[Expression, float, float]:
    """A random instance of expression ``code`` (0..9), its strength in ``strength_range`` and
    the weight (0..``confusion``) of the confusable neighbour blended into it.

    Codes 8 (None) and 9 (Uncertain) blend two random expressions at a random weight. With
    ``confusion`` 0 no random number is drawn for the blend (the easy set stays as it was).
    """
    weight = 0.0
    if code in (8, 9):
        first, second = rng.choice(NUM_EXPRESSIONS, size=2, replace=False)
        base = _prototype(rng, int(first)).blended(_prototype(rng, int(second)), float(rng.uniform(0.3, 0.7)))
    else:
        base = _prototype(rng, code)
        if confusion > 0.0:
            weight = float(rng.uniform(0.0, confusion))
            neighbour = _prototype(rng, NEIGHBOUR[code])
            blend = base.blended(neighbour, weight)
            # Teeth are on/off: shown when the blend leans towards a face that shows them.
            base = replace(blend, teeth_upper=float(blend.teeth_upper > 0.5), teeth_lower=float(blend.teeth_lower > 0.5))
    strength = float(rng.uniform(*strength_range))
    noise = rng.standard_normal(len(fields(Expression)))
    values = {
        f.name: getattr(base, f.name) * strength + getattr(_NOISE, f.name) * z
        for f, z in zip(fields(Expression), noise)
    }
    # Fractions and openings must not go negative (a negative opening would flip the lips).
    for name in ("mouth_open", "mouth_round", "lip_press", "eye_squint", "nose_wrinkle", "cheek_raise",
                 "lip_raise_left", "lip_raise_right"):
        values[name] = float(np.clip(values[name], 0.0, 1.0))
    # Teeth are on/off; they keep their prototype flag rather than fading with strength.
    values["teeth_upper"], values["teeth_lower"] = base.teeth_upper, base.teeth_lower
    values["smirk_crease"] = base.smirk_crease * strength
    return replace(Expression(), **values), strength, weight


# Mean (valence, arousal) per code 0..7, after the circumplex positions AffectNet's annotators used.
_AFFECT = {
    0: (0.0, -0.1),
    1: (0.7, 0.25),
    2: (-0.65, -0.3),
    3: (0.15, 0.7),
    4: (-0.6, 0.75),
    5: (-0.65, 0.3),
    6: (-0.6, 0.65),
    7: (-0.45, 0.2),
}


def sample_affect(rng: np.random.Generator, code: int, strength: float, confusion_weight: float = 0.0
                  ) -> tuple[float, float]:
    """(valence, arousal) in [-1, 1] for expression ``code`` at ``strength``, blended with its
    confusable neighbour's by ``confusion_weight`` (as the face is); (-2, -2) for codes 8-10."""
    if code not in _AFFECT:
        return NOT_ANNOTATED, NOT_ANNOTATED
    valence, arousal = _AFFECT[code]
    if confusion_weight > 0.0:
        other_v, other_a = _AFFECT[NEIGHBOUR[code]]
        valence = (1.0 - confusion_weight) * valence + confusion_weight * other_v
        arousal = (1.0 - confusion_weight) * arousal + confusion_weight * other_a
    # Stronger expressions sit further from the neutral centre of the circumplex.
    scale = 0.4 + 0.6 * strength
    v = valence * scale + rng.normal(0.0, 0.08)
    a = arousal * scale + rng.normal(0.0, 0.08)
    return float(np.clip(v, -1.0, 1.0)), float(np.clip(a, -1.0, 1.0))
