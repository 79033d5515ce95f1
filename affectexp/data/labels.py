"""Expression codes and the class sets that map them into a training label space."""

from __future__ import annotations

from collections.abc import Sequence

from affectexp.errors import UserInputError

# AffectNet's expression codes, in code order (the index is the code).
AFFECTNET_EXPRESSIONS: tuple[str, ...] = (
    "neutral",
    "happy",
    "sad",
    "surprise",
    "fear",
    "disgust",
    "anger",
    "contempt",
    "none",
    "uncertain",
    "non_face",
)
EXPRESSION_CODES: dict[str, int] = {name: code for code, name in enumerate(AFFECTNET_EXPRESSIONS)}

# Codes 8-10 are annotations, not expressions: never a training class.
NON_EXPRESSION_CODES: frozenset[int] = frozenset({8, 9, 10})

# FER2013's `emotion` codes, in code order. They are mapped into AffectNet's codes by name
# (fer2013_to_affectnet), never by number: the two orders differ (FER's 0 is angry).
FER2013_EXPRESSIONS: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

# Spellings found in re-distributions (FER2013, folder trees) for the same expressions.
EXPRESSION_ALIASES: dict[str, str] = {
    "angry": "anger",
    "happiness": "happy",
    "sadness": "sad",
    "surprised": "surprise",
    "fearful": "fear",
    "disgusted": "disgust",
    "contemptuous": "contempt",
}


class ClassSetError(UserInputError, ValueError):
    """A class set naming an expression that does not exist, or one expression twice."""


def canonical_name(name: str) -> str:
    """An expression name as AffectNet spells it: case-insensitive, 'angry'-style aliases resolved."""
    lowered = name.strip().lower()
    return EXPRESSION_ALIASES.get(lowered, lowered)


def expression_code_of_name(name: str) -> int:
    """AffectNet code (0..7) of an expression name or alias (e.g. 'Angry' -> 6), or -1 if unknown."""
    code = EXPRESSION_CODES.get(canonical_name(name), -1)
    return -1 if code in NON_EXPRESSION_CODES else code


def fer2013_to_affectnet() -> list[int]:
    """AffectNet code of each FER2013 emotion code (list index), matched by name."""
    return [expression_code_of_name(name) for name in FER2013_EXPRESSIONS]


class ClassSet:
    """An ordered set of expression names; maps AffectNet codes to labels 0..K-1.

    A user-defined set (conf/classes/<name>.yaml) is any ordered subset of the eight
    expressions; aliases such as 'angry' are accepted and stored under AffectNet's name.
    Codes outside the set map to -1 so the caller can count what it leaves out.
    """

    def __init__(self, names: Sequence[str]):
        unknown = [n for n in names if expression_code_of_name(n) < 0]
        if unknown:
            raise ClassSetError(
                f"classes.names: unknown expression name(s) {unknown}; "
                f"choose from {list(AFFECTNET_EXPRESSIONS[:8])}"
            )
        canonical = [canonical_name(n) for n in names]
        if len(set(canonical)) != len(canonical):
            raise ClassSetError(f"classes.names: the same expression twice in {list(names)}")
        self.names: tuple[str, ...] = tuple(canonical)
        self._label_of_code = {EXPRESSION_CODES[n]: i for i, n in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    def label_of_code(self, code: int) -> int:
        """Label (0..K-1) of an AffectNet expression code, or -1 when the set leaves it out."""
        return self._label_of_code.get(int(code), -1)
