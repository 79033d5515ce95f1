"""What a run records as params: the resolved config, curated so that runs compare.

Every run of any kind logs the same keys for the same config (a sweep job, a trial and a
single run alike). Left out: where files go and how the run is logged (`paths`, `logger`,
`hydra`, and any location-valued key: they differ between machines, not between
experiments), the search's own settings (`tuner`: its parent run's), class paths (a
`_target_` is recorded by its last name, `model.target` = "build_resnet", `optimizer.target`
= "AdamW"), other `_`-keys, and unset values (no "None"
strings). A value longer than LONG_PARAM_CHARS (a serialised augmentation pipeline) goes to
the `params/long.json` artifact; config.yaml holds the whole config anyway.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import mlflow

PARAMS_PER_BATCH = 100  # MLflow's limit per log_params call
LONG_PARAM_CHARS = 250  # longer values are unreadable in the runs table
LEFT_OUT_GROUPS = ("paths", "logger", "hydra", "tuner")
_LOCATION_KEYS = ("root", "path", "file")


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"model.widths": "[32, 64, 128]", "optimizer.lr": "0.001", ...}.

    Lists are written as JSON so that every run of a sweep has the same keys.
    """
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, name + "."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple, Mapping)) else str(value)
    return flat


def _is_location(key: str, value: Any) -> bool:
    last = key.rsplit(".", 1)[-1]
    return (last in _LOCATION_KEYS or last.endswith("_dir")
            or (isinstance(value, str) and (value.startswith("/") or "://" in value)))


def _curated(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`config` without what the module docstring leaves out, still nested."""
    kept = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if key == "_target_" and isinstance(value, str):  # which implementation, by its own name
            kept["target"] = value.rsplit(".", 1)[-1]
            continue
        if key.startswith("_") or value is None or (not prefix and key in LEFT_OUT_GROUPS):
            continue
        if isinstance(value, Mapping):
            value = _curated(value, name + ".")
            if not value:
                continue
        elif _is_location(name, value):
            continue
        kept[key] = value
    return kept


def run_params(config: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(params, long params) of a resolved config (a plain nested dict): see the module doc."""
    flat = flatten_params(_curated(config))
    short = {key: value for key, value in flat.items() if len(value) <= LONG_PARAM_CHARS}
    return short, {key: value for key, value in flat.items() if key not in short}


def log_config_params(config: Mapping[str, Any]) -> None:
    """Log run_params(config) on the active run: params in batches, long ones as params/long.json."""
    short, long = run_params(config)
    log_params(short)
    if long:
        mlflow.log_dict(long, "params/long.json")


def log_params(params: Mapping[str, str]) -> None:
    """Log params on the active run in batches of MLflow's limit."""
    items = list(params.items())
    for start in range(0, len(items), PARAMS_PER_BATCH):
        mlflow.log_params(dict(items[start:start + PARAMS_PER_BATCH]))
