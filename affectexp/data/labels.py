"""Expression codes and the class sets that map them into a training label space."""

from __future__ import annotations

from collections.abc import Sequence

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

# Commonly used class sets, named by their expressions (the label is the position).
CLASS_SETS: dict[str, tuple[str, ...]] = {
    "basic5": ("neutral", "happy", "sad", "surprise", "anger"),
    "basic7": ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger"),
    "affectnet8": ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt"),
}


class ClassSet:
    """An ordered set of expression names; maps AffectNet codes to labels 0..K-1.

    Codes outside the set map to -1 so the caller can count what it leaves out.
    """

    def __init__(self, names: Sequence[str]):
        unknown = [n for n in names if n not in EXPRESSION_CODES or EXPRESSION_CODES[n] in NON_EXPRESSION_CODES]
        if unknown:
            raise ValueError(
                f"classes: unknown expression name(s) {unknown}; "
                f"choose from {list(AFFECTNET_EXPRESSIONS[:8])}"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"classes: duplicate names in {list(names)}")
        self.names: tuple[str, ...] = tuple(names)
        self._label_of_code = {EXPRESSION_CODES[n]: i for i, n in enumerate(self.names)}

    def __len__(self) -> int:
        return len(self.names)

    def label_of_code(self, code: int) -> int:
        """Label (0..K-1) of an AffectNet expression code, or -1 when the set leaves it out."""
        return self._label_of_code.get(int(code), -1)

    def label_of_name(self, name: str) -> int:
        """Label of an expression name (case-insensitive, 'angry' style aliases accepted), or -1."""
        canonical = EXPRESSION_ALIASES.get(name.strip().lower(), name.strip().lower())
        return self.names.index(canonical) if canonical in self.names else -1


# Spellings found in re-distributions (FER2013, folder trees) for the same expressions.
EXPRESSION_ALIASES: dict[str, str] = {
    "angry": "anger",
    "happiness": "happy",
    "sadness": "sad",
    "surprised": "surprise",
    "fearful": "fear",
    "disgusted": "disgust",
}
