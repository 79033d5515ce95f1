"""Every option of every config group composes and resolves; typos and bad types stop early."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from affectexp.config import (AugmentationConfig, CacheConfig, ClassesConfig, EvaluateConfig, FacesConfig,
                              LoggerConfig, PathsConfig, PreprocessConfig, TrainConfig, TrainerConfig, TunerConfig)
from conftest import CONF_DIR, compose_config

ENTRY_GROUPS = {
    "train": ["dataset", "classes", "cache", "model", "augmentation", "optimizer", "optimizer/schedule", "trainer",
              "logger", "paths", "experiment", "debug"],
    "preprocess": ["dataset", "classes", "cache", "faces", "paths"],
}


def group_options(group: str) -> list[str]:
    """The options of a group that the repository holds: a `conf/experiment/tuned_*.yaml` that a
    search exported is the user's, not a case of this test."""
    tracked = subprocess.run(["git", "ls-files", "--", f"{group}/*.yaml"], cwd=CONF_DIR, capture_output=True,
                             text=True, check=True).stdout.split()
    return sorted(Path(name).stem for name in tracked if Path(name).parent == Path(group))


def option_values(group: str, option: str) -> dict:
    """{dotted key: value} of an option's file as the composed config must hold them (unresolved):
    under the group, or at the top for a `# @package _global_` file; ??? left out."""
    path = Path(CONF_DIR) / group / f"{option}.yaml"
    loaded = OmegaConf.load(path)
    values = {key: value for key, value in OmegaConf.to_container(loaded).items() if key != "defaults"}
    prefix = "" if path.read_text().startswith("# @package _global_") else f"{group.replace('/', '.')}."
    flat: dict = {}

    def walk(node, key):
        if isinstance(node, dict) and node:
            for child, value in node.items():
                walk(value, f"{key}.{child}")
        elif node != "???":
            flat[key] = node

    for key, value in values.items():  # a file that sets nothing (the schema's values) checks nothing
        walk(value, f"{prefix}{key}")
    return flat


CASES = [(entry, group, option) for entry, groups in ENTRY_GROUPS.items() for group in groups
         for option in group_options(group)]


@pytest.mark.parametrize(("entry", "group", "option"), CASES, ids=[f"{e}-{g}={o}" for e, g, o in CASES])
def test_every_group_option_composes(entry, group, option, tmp_path):
    cfg = compose_config(entry, tmp_path, [f"{group}={option}", "dataset.root=/data/affectnet"])
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert container["cache"]["path"].endswith(".h5")
    assert str(tmp_path) in container["cache"]["path"]
    # The option was really chosen: every value its file sets is in the composed config.
    for key, value in option_values(group, option).items():
        if key == "dataset.root" or (isinstance(value, str) and "${" in value):
            continue  # set on the command line above, or derived from it (paths.root)
        composed = OmegaConf.select(cfg, key)
        if OmegaConf.is_config(composed):
            composed = OmegaConf.to_container(composed)
        assert composed == value, f"{group}={option}: {key}"


# The typed groups, by the schema behind each (affectexp/config.py).
SCHEMA_OF_GROUP = {"paths": PathsConfig, "classes": ClassesConfig, "cache": CacheConfig, "faces": FacesConfig,
                   "augmentation": AugmentationConfig, "trainer": TrainerConfig, "logger": LoggerConfig,
                   "tuner": TunerConfig}
SCHEMA_CASES = [(group, option) for group in SCHEMA_OF_GROUP for option in group_options(group)]


@pytest.mark.parametrize(("group", "option"), SCHEMA_CASES, ids=[f"{g}={o}" for g, o in SCHEMA_CASES])
def test_an_option_file_sets_only_what_differs_from_its_schema(group, option):
    defaults = OmegaConf.to_container(OmegaConf.structured(SCHEMA_OF_GROUP[group]))
    for key, value in option_values(group, option).items():
        default = defaults
        for part in key.split(".")[1:]:
            default = default.get(part) if isinstance(default, dict) else None
        assert value != default, f"conf/{group}/{option}.yaml repeats the schema's {key}: {value!r}"


@pytest.mark.parametrize(("entry", "schema"), [("train", TrainConfig), ("preprocess", PreprocessConfig),
                                               ("evaluate", EvaluateConfig)])
def test_an_entry_config_sets_only_what_differs_from_its_schema(entry, schema):
    own = OmegaConf.to_container(OmegaConf.load(Path(CONF_DIR) / f"{entry}.yaml"))
    defaults = OmegaConf.to_container(OmegaConf.structured(schema))
    repeated = {key: value for key, value in own.items()
                if key not in ("defaults", "hydra") and defaults.get(key) == value}
    assert not repeated, f"conf/{entry}.yaml repeats its schema's values {repeated}"


def test_an_untracked_option_file_is_not_a_case(tmp_path):
    exported = Path(CONF_DIR) / "experiment" / "tuned_untracked_check.yaml"
    exported.write_text("# @package _global_\ntrainer:\n  epochs: 1\n")
    try:
        assert "tuned_untracked_check" not in group_options("experiment")
        assert "quick48" in group_options("experiment")
    finally:
        exported.unlink()


def test_every_group_has_options():
    for groups in ENTRY_GROUPS.values():
        for group in groups:
            assert group_options(group), f"conf/{group}/ has no option"


def test_cache_path_is_shared_by_both_entry_points(tmp_path):
    train = compose_config("train", tmp_path, ["cache.size=48"])
    preprocess = compose_config("preprocess", tmp_path, ["cache.size=48"])
    assert train.cache.path == preprocess.cache.path
    assert Path(train.cache.path).name == "synthetic-gray48-basic5.h5"


# optimizer.lr=fast is refused before training instead (test_optimizers.py): the optimizer group is untyped.
@pytest.mark.parametrize("override", ["trainer.epoch=3", "trainer.epochs=three", "cache.color=blue",
                                      "trainer.balance=smote", "trainer.strategy=multiworker",
                                      "optimizer.name=adamx", "model=no_such_model"])
def test_typo_or_wrong_type_fails_at_composition(override, tmp_path):
    key, _, value = override.partition("=")
    with pytest.raises(ConfigCompositionException) as error:
        compose_config("train", tmp_path, [override])
    # Hydra's message names what was wrong: the key, or the value it could not take.
    message = f"{error.value} {error.value.__cause__}"
    assert key.rsplit(".", 1)[-1] in message or value in message, message


@pytest.mark.parametrize("override", [
    "trainer.epochs=0", "trainer.batch_size=0", "trainer.steps_per_epoch=0", "trainer.steps_per_epoch=-1",
    "trainer.label_smoothing=1.5", "trainer.early_stopping_patience=-1", "trainer.ram_budget_mb=-1",
    "tuner=random tuner.max_trials=0", "tuner=hyperband tuner.hyperband_factor=1"])
def test_a_value_no_run_can_use_stops_naming_the_key(override, tmp_path):
    """Refused by check_values, which every task calls before any work or MLflow run."""
    from affectexp.config import check_values
    from affectexp.errors import ConfigError

    key, _, value = override.split()[-1].partition("=")
    cfg = compose_config("train", tmp_path, override.split())
    with pytest.raises(ConfigError, match=rf"^{key}: {value}; it must be "):
        check_values(cfg)


@pytest.mark.parametrize("entry, override, message", [
    ("preprocess", "+foo=1", "foo: no such key; "),
    ("train", "+trainer.epoch=3", "trainer.epoch: no such key (did you mean trainer.epochs?); "),
    ("evaluate", "+cache.sise=48", "cache.sise: no such key (did you mean cache.size?); "),
])
def test_a_key_added_with_a_plus_that_no_schema_has_stops_naming_it(entry, override, message, tmp_path):
    """Hydra suggests `+key=...` for a key it does not know; nothing would read it."""
    from affectexp.config import check_values
    from affectexp.errors import ConfigError

    cfg = compose_config(entry, tmp_path, [override, "model_uri=unused"] if entry == "evaluate" else [override])
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_values(cfg)


def test_a_key_of_a_group_left_unchosen_names_the_group_to_choose():
    from affectexp.config import check_unchosen_groups
    from affectexp.errors import ConfigError

    for overrides in (["tuner.max_trials=2"], ["experiment=quick48", "tuner.max_trials=2"], ["-m", "debug.x=1,2"]):
        with pytest.raises(ConfigError, match=r"^(tuner|debug)\.\w+: no (tuner|debug) is chosen to set it on; "
                                              r"choose one too: (tuner=<bayesian\|hyperband\|random>|debug=<fast>)$"):
            check_unchosen_groups("train", overrides)
    for overrides in (["tuner=random", "tuner.max_trials=2"], ["+tuner=hyperband", "tuner.hyperband_factor=2"],
                      ["trainer.epochs=2", "model=resnet"]):
        check_unchosen_groups("train", overrides)
