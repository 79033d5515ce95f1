"""The embedded synthetic data set: generated in AffectNet's layout, then read as AffectNet."""

from __future__ import annotations

import logging
from pathlib import Path

from affectexp.data.affectnet_layout import MANUAL_IMAGES_DIR, MANUAL_LISTS_DIR
from affectexp.data.sources.affectnet import AffectNetSource
from affectexp.data.sources.rows import SourceRows
from affectexp.data.synthetic.difficulty import PRESETS, resolve_difficulty

log = logging.getLogger(__name__)


class SyntheticSource:
    """Generates the synthetic set under `root` on first use, then reads it like AffectNet.

    Args:
        name: the data set's name (used in cache file names).
        root: where the set lives (created if missing).
        train_per_class: faces per expression code 0-7 in training.csv.
        test_per_class: faces per expression code 0-7 in validation.csv.
        seed: the generator's seed; the same seed gives the same files.
        num_workers: generator processes; None uses every core.
        difficulty: a preset of affectexp/data/synthetic/difficulty.py (easy, hard).
        realism: knob -> value overrides of that preset.
    """

    def __init__(self, name: str, root: str, train_per_class: int, test_per_class: int, seed: int = 0,
                 num_workers: int | None = None, difficulty: str = "easy", realism: dict | None = None):

        self.name = name
        self.root = Path(root)
        self.train_per_class = train_per_class
        self.test_per_class = test_per_class
        self.seed = seed
        self.num_workers = num_workers
        self.difficulty = resolve_difficulty(difficulty, dict(realism or {}))
        easy = self.difficulty == PRESETS["easy"]
        # Generated in the canonical layout: nothing to find. The knobs a preset resolved to are
        # recorded (cache attributes and fingerprint), so a changed preset is a different cache.
        self.resolved: dict = {} if easy else {"realism": self.difficulty.as_dict()}
        # The easy set is the set generated before these keys existed: left out of the record,
        # caches built then keep their fingerprint instead of being refused as stale.
        self.unrecorded: tuple[str, ...] = ("difficulty", "realism") if easy else ()

    def prepare(self) -> None:
        """Generate the set unless `root` already holds it with these parameters."""
        from affectexp.data.synthetic import ensure_synthetic

        generated = ensure_synthetic(self.root, self.train_per_class, self.test_per_class, self.seed, self.num_workers,
                                     self.difficulty)
        log.info("%s synthetic data set at %s", "Generated" if generated else "Reusing", self.root)

    def read(self, landmarks: bool = False) -> SourceRows:
        # The generator wrote these folders: named, not searched for.
        where = {"lists": {"manual": MANUAL_LISTS_DIR}, "images": {"manual": MANUAL_IMAGES_DIR}}
        return AffectNetSource(self.name, str(self.root), **where).read(landmarks)
