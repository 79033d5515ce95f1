"""Every option of every config group composes and resolves; typos and bad types stop early."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from conftest import CONF_DIR, compose_config

ENTRY_GROUPS = {
    "train": ["dataset", "classes", "cache", "model", "augmentation", "optimizer", "trainer", "logger", "paths",
              "experiment", "debug"],
    "preprocess": ["dataset", "classes", "cache", "faces", "paths"],
}


def group_options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


CASES = [(entry, group, option) for entry, groups in ENTRY_GROUPS.items() for group in groups
         for option in group_options(group)]


@pytest.mark.parametrize(("entry", "group", "option"), CASES, ids=[f"{e}-{g}={o}" for e, g, o in CASES])
def test_every_group_option_composes(entry, group, option, tmp_path):
    cfg = compose_config(entry, tmp_path, [f"{group}={option}", "dataset.root=/data/affectnet"])
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert container["cache"]["path"].endswith(".h5")
    assert str(tmp_path) in container["cache"]["path"]


def test_every_group_has_options():
    for groups in ENTRY_GROUPS.values():
        for group in groups:
            assert group_options(group), f"conf/{group}/ has no option"


def test_cache_path_is_shared_by_both_entry_points(tmp_path):
    train = compose_config("train", tmp_path, ["cache.size=48"])
    preprocess = compose_config("preprocess", tmp_path, ["cache.size=48"])
    assert train.cache.path == preprocess.cache.path
    assert Path(train.cache.path).name == "synthetic-gray48-basic5.h5"


@pytest.mark.parametrize("override", ["trainer.epoch=3", "trainer.epochs=three", "cache.color=blue",
                                      "optimizer.lr=fast", "model=no_such_model"])
def test_typo_or_wrong_type_fails_at_composition(override, tmp_path):
    with pytest.raises(ConfigCompositionException):
        compose_config("train", tmp_path, [override])
