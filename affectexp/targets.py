"""Config nodes that name what builds them by `_target_` (a model, an optimizer, a learning-rate
schedule), checked against the signature of the function or class they name.

Its keyword arguments, with their annotations and defaults, are the node's typed schema, so a new
model or schedule needs no schema of its own, and `model.widht=...` (a typo) or
`model.dropout=high` (a wrong type) stops before training with OmegaConf's own message.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, List, Optional

from hydra._internal.utils import _locate
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from affectexp.errors import ConfigError

_SCALARS = (int, float, bool, str)


def _field_type(annotation: Any) -> Any:
    """An annotation as a type OmegaConf validates (Sequence[int] -> List[int], X | None -> Optional[X])."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation in _SCALARS:
        return annotation
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return Optional[_field_type(rest[0])] if len(rest) == 1 else Any
    if origin is not None and isinstance(origin, type) and issubclass(origin, Sequence) and args:
        item = args[0]
        return List[item] if item in _SCALARS else List[Any]
    return Any


def _field(parameter: inspect.Parameter) -> dataclasses.Field:
    default = parameter.default
    if default is inspect.Parameter.empty:
        return dataclasses.field(default="???")
    if isinstance(default, (list, tuple)):
        return dataclasses.field(default_factory=lambda: list(default))
    return dataclasses.field(default=default)


def target_schema(target: Callable[..., Any], provided: Sequence[str]) -> type | None:
    """A dataclass with `_target_`, `_partial_` and one field per argument of `target` that the
    caller does not pass itself (`provided`), or None when `target` takes **kwargs (nothing can
    be checked)."""
    parameters = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    hints = typing.get_type_hints(target.__init__ if isinstance(target, type) else target)
    fields = [("_target_", str, dataclasses.field(default="???")),
              ("_partial_", bool, dataclasses.field(default=False))]
    fields += [(name, _field_type(hints.get(name, Any)), _field(p))
               for name, p in parameters.items() if name not in provided]
    return dataclasses.make_dataclass(f"{target.__name__}_config", fields)


def check_target_config(key: str, node: Mapping[str, Any], provided: Sequence[str]) -> None:
    """ConfigError naming the key (`key`.<name>) when node._target_ cannot be imported, when it
    does not take the arguments the caller passes itself (`provided`), or when `node` does not fit
    the rest of its signature."""
    target = node.get("_target_")
    try:
        # Hydra's own lookup, the one instantiate uses: hydra.utils.get_method would also log the
        # failure as an ERROR line of its own, and the user is to read one line.
        imported = _locate(target)
    except Exception as error:  # ImportError or ValueError, wrapped differently by Hydra's version
        # Hydra's message spreads what failed over lines (the module, the name): one line here.
        reason = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        raise ConfigError(f"{key}._target_: cannot import {target!r}: {reason}") from None
    if not callable(imported):
        raise ConfigError(f"{key}._target_: {target!r} is neither a function nor a class")
    schema = target_schema(imported, provided)
    if schema is None:
        return
    parameters = inspect.signature(imported).parameters
    refused = [name for name in provided if name not in parameters]
    if refused:
        raise ConfigError(f"{key}._target_: {target} has no argument {refused[0]!r}; it is called with "
                          f"{', '.join(provided)} and its configured arguments")
    try:
        OmegaConf.merge(OmegaConf.structured(schema), node)
    except OmegaConfBaseException as error:
        message = str(error.msg).splitlines()[0]
        raise ConfigError(f"{key}.{error.full_key}: {message} (the arguments of {target})") from None
