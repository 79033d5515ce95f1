"""The typed schema of a `model` config, derived from its builder function's signature.

Each model is one builder function; its keyword arguments with their annotations and
defaults are the schema, so a new model needs no schema of its own, and
`model.widht=...` (a typo) or `model.dropout=high` (a wrong type) stops before training
with OmegaConf's own message.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, List, Optional

from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from affectexp.errors import UserInputError

# Arguments the training code passes; they are not part of the config.
PROVIDED = ("input_shape", "num_classes")
_SCALARS = (int, float, bool, str)


class ModelConfigError(UserInputError):
    """A `model` config that does not fit its builder's signature."""


def _field_type(annotation: Any) -> Any:
    """A builder's annotation as a type OmegaConf validates (Sequence[int] -> List[int], X | None -> Optional[X])."""
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


def model_schema(builder: Callable[..., Any]) -> type | None:
    """A dataclass with `_target_` and one field per configurable argument of `builder`,
    or None when the builder takes **kwargs (nothing can be checked)."""
    parameters = inspect.signature(builder).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    hints = typing.get_type_hints(builder)
    fields = [("_target_", str, dataclasses.field(default="???"))]
    fields += [(name, _field_type(hints.get(name, Any)), _field(p))
               for name, p in parameters.items() if name not in PROVIDED]
    return dataclasses.make_dataclass(f"{builder.__name__}_config", fields)


def check_model_config(model_cfg: DictConfig) -> None:
    """Raise ModelConfigError naming the key when `model_cfg` does not fit its `_target_` builder."""
    target = model_cfg.get("_target_")
    try:
        builder = get_method(target)
    except Exception as error:  # Hydra raises ImportError or ValueError, wrapped differently by version
        raise ModelConfigError(f"model._target_: cannot import {target!r}: {str(error).splitlines()[0]}") from None
    schema = model_schema(builder)
    if schema is None:
        return
    values = OmegaConf.to_container(model_cfg, resolve=True)
    try:
        OmegaConf.merge(OmegaConf.structured(schema), values)
    except OmegaConfBaseException as error:
        message = str(error.msg).splitlines()[0]
        raise ModelConfigError(f"model.{error.full_key}: {message} (the arguments of {target})") from None
