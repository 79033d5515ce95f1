"""Train/validation/test assignment that is reproducible from a seed."""

from __future__ import annotations

import numpy as np
import pandas as pd

from affectexp.data.cache import SPLITS

_TRAIN, _VAL = SPLITS.index("train"), SPLITS.index("val")


def assign_validation(rows: pd.DataFrame, val_fraction: float, seed: int) -> pd.DataFrame:
    """Move a seeded, per-label stratified `val_fraction` of the "train" rows to "val".

    Sources that define their own validation rows (FER2013's PublicTest) keep them and lose
    no training rows. Returns the rows ordered split by split (train, val, test), each in
    source order, so that every split is one contiguous range of the cache; `split` and the
    added `split_code` (uint8, index into SPLITS) hold the final split. `val_fraction` is in
    [0, 1) (affectexp.config.check_values refuses any other value).
    """
    codes = rows["split"].map({name: i for i, name in enumerate(SPLITS)}).to_numpy(dtype=np.uint8)
    if not (codes == _VAL).any() and val_fraction > 0:
        rng = np.random.default_rng(seed)
        labels = rows["label"].to_numpy()
        train = codes == _TRAIN
        for label in np.unique(labels[train]):
            group = np.flatnonzero(train & (labels == label))
            count = int(round(len(group) * val_fraction))
            codes[rng.permutation(group)[:count]] = _VAL
    order = np.argsort(codes, kind="stable")
    ordered = rows.iloc[order].reset_index(drop=True)
    ordered["split_code"] = codes[order]
    ordered["split"] = pd.Categorical.from_codes(codes[order], categories=list(SPLITS))
    return ordered

