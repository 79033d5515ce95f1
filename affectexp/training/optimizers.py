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
from collections.abc import Callable, Mapping
from typing import Any

import keras
from hydra.utils import instantiate

from affectexp.errors import ConfigError
from affectexp.targets import check_target_config
from affectexp.training.schedules import SCHEDULE_ARGUMENTS

# The keys of an optimizer node that are not arguments of its `_target_`.
OWN_KEYS = ("lr", "schedule")


def check_optimizer_config(node: Mapping[str, Any], epochs: int) -> None:
    """ConfigError naming the key when the optimizer node cannot be built: lr or schedule
    missing, a `_target_` that cannot be imported, an argument the schedule's signature refuses,
    or one the optimizer class refuses when built (built here once, for `epochs` of one step, and
    dropped: Keras classes take **kwargs, so only building them checks their arguments).
    optimizer.lr's value is checked with the other ranges (affectexp.config.check_values)."""
    missing = [key for key in OWN_KEYS if key not in node]
    if missing:
        raise ConfigError(f"optimizer.{missing[0]}: not set; an optimizer's file sets lr and chooses a schedule "
                          "in its defaults list (`- schedule: constant`, see conf/optimizer/adam.yaml)")
    schedule = node["schedule"]
    if not isinstance(schedule, Mapping):  # optimizer.schedule=cosine: the key as it was before it was a group
        raise ConfigError(f"optimizer.schedule: {schedule!r} is not a schedule's config; a schedule is "
                          f"chosen as a config group: optimizer/schedule={schedule}")
    check_target_config("optimizer.schedule", schedule, SCHEDULE_ARGUMENTS)
    check_target_config("optimizer", class_arguments(node), ("learning_rate",))
    build_optimizer(node, steps_per_epoch=1, epochs=epochs)


def class_arguments(node: Mapping[str, Any]) -> dict[str, Any]:
    """The optimizer node less OWN_KEYS: the class's `_target_`, `_partial_` and arguments."""
    return {key: value for key, value in node.items() if key not in OWN_KEYS}


def build_optimizer(node: Mapping[str, Any], steps_per_epoch: int, epochs: int) -> keras.optimizers.Optimizer:
    """The Keras optimizer that the node's `_target_` names, with its other arguments and its lr as
    its schedule shapes it over `epochs` epochs of `steps_per_epoch` steps. Check the node first
    (check_optimizer_config); a class or schedule refusing an argument is a ConfigError naming it."""
    schedule = node["schedule"]
    learning_rate = _called("optimizer.schedule", schedule, instantiate(schedule), node["lr"],
                            steps_per_epoch=steps_per_epoch, epochs=epochs)
    arguments = class_arguments(node)
    return _called("optimizer", arguments, instantiate(arguments), learning_rate=learning_rate)


def _called(key: str, node: Mapping[str, Any], factory: Callable[..., Any], *args, **kwargs) -> Any:
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
        raise ConfigError(f"{where}: {node['_target_']} refused it: {message}") from None
