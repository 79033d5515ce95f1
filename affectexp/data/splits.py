"""Train/validation/test assignment that is reproducible from a seed."""

from __future__ import annotations

import numpy as np
import pandas as pd

from affectexp.data.cache import SPLITS


def assign_validation(rows: pd.DataFrame, val_fraction: float, seed: int) -> pd.DataFrame:
    """Move a seeded, per-label stratified `val_fraction` of the "train" rows to "val".

    Sources that define their own validation rows (FER2013's PublicTest) keep them and lose
    no training rows. Returns the rows ordered split by split (train, val, test), each in
    source order, so that every split is one contiguous range of the cache.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"split.val_fraction: {val_fraction} is not in [0, 1)")
    rows = rows.copy()
    if not (rows["split"] == "val").any() and val_fraction > 0:
        rng = np.random.default_rng(seed)
        train = rows[rows["split"] == "train"]
        for _, group in sorted(train.groupby("label"), key=lambda item: item[0]):
            count = int(round(len(group) * val_fraction))
            chosen = rng.permutation(group.index.to_numpy())[:count]
            rows.loc[chosen, "split"] = "val"
    order = rows["split"].map({name: i for i, name in enumerate(SPLITS)})
    return rows.assign(split_code=order.astype(np.uint8)).sort_values("split_code", kind="stable").reset_index(drop=True)
