"""The optimizer and its learning-rate schedule, each named by `_target_` with `_partial_: true`
(conf/optimizer/<name>.yaml, conf/optimizer/schedule/<name>.yaml), built once the steps of an
epoch are known.

An optimizer node is a Keras optimizer class and its arguments, plus the two keys this module reads
itself (OWN_KEYS): `lr`, the learning rate that searches and sweeps vary, and `schedule`, which
turns lr into the `learning_rate` the class is given (affectexp/training/schedules.py). A new
optimizer is one YAML file, a new schedule one YAML file and one function: nothing here names them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import keras
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from affectexp.errors import ConfigError
from affectexp.targets import check_target_config
from affectexp.training.schedules import SCHEDULE_ARGUMENTS

# The keys of an optimizer node that are not arguments of its `_target_`.
OWN_KEYS = ("lr", "schedule")


def check_optimizer_config(cfg: DictConfig, epochs: int) -> None:
    """ConfigError naming the key when the optimizer node `cfg` cannot be built: lr or schedule
    missing, a `_target_` that cannot be imported, an argument the schedule's signature refuses,
    or one the optimizer class refuses when built (built here once, for `epochs` of one step, and
    dropped: Keras classes take **kwargs, so only building them checks their arguments).
    optimizer.lr's value is checked with the other ranges (affectexp.config.check_values)."""
    missing = [key for key in OWN_KEYS if key not in cfg]
    if missing:
        raise ConfigError(f"optimizer.{missing[0]}: not set; an optimizer's file sets lr and chooses a schedule "
                          "in its defaults list (`- schedule: constant`, see conf/optimizer/adam.yaml)")
    if not OmegaConf.is_dict(cfg.schedule):  # optimizer.schedule=cosine: the key as it was before it was a group
        raise ConfigError(f"optimizer.schedule: {cfg.schedule!r} is not a schedule's config; a schedule is "
                          f"chosen as a config group: optimizer/schedule={cfg.schedule}")
    check_target_config("optimizer.schedule", cfg.schedule, SCHEDULE_ARGUMENTS)
    check_target_config("optimizer", class_arguments(cfg), ("learning_rate",))
    build_optimizer(cfg, steps_per_epoch=1, epochs=epochs)


def class_arguments(cfg: DictConfig) -> DictConfig:
    """The optimizer node less OWN_KEYS, resolved: the class's `_target_`, `_partial_` and arguments."""
    node = OmegaConf.to_container(cfg, resolve=True)
    return OmegaConf.create({key: value for key, value in node.items() if key not in OWN_KEYS})


def build_optimizer(cfg: DictConfig, steps_per_epoch: int, epochs: int) -> keras.optimizers.Optimizer:
    """The Keras optimizer that cfg._target_ names, with the node's other arguments and cfg.lr as
    cfg.schedule shapes it over `epochs` epochs of `steps_per_epoch` steps. Check the node first
    (check_optimizer_config); a class or schedule refusing an argument is a ConfigError naming it."""
    learning_rate = _called("optimizer.schedule", cfg.schedule, instantiate(cfg.schedule), cfg.lr,
                            steps_per_epoch=steps_per_epoch, epochs=epochs)
    arguments = class_arguments(cfg)
    return _called("optimizer", arguments, instantiate(arguments), learning_rate=learning_rate)


def _called(key: str, node: DictConfig, factory: Callable[..., Any], *args, **kwargs) -> Any:
    """factory(*args, **kwargs), a TypeError or ValueError it raises turned into a ConfigError that
    names the key of `node` its message names (Python and Keras name the argument they refuse), or
    else `key` itself."""
    try:
        return factory(*args, **kwargs)
    except (TypeError, ValueError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        named = [name for name in node
                 if not name.startswith("_") and re.search(rf"\b{re.escape(name)}\b", message)]
        where = f"{key}.{named[0]}" if named else key
        raise ConfigError(f"{where}: {node._target_} refused it: {message}") from None
