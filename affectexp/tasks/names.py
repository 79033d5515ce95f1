"""Run names a person can read, from what made the run: its model and its overrides.

A single run is "resnet augmentation=strong" (its model and command-line overrides), a
sweep's job "resnet lr=3e-4" (the values swept), a search's trial "trial 3 resnet lr=0.0032"
(search.trial_name), a sweep's parent "sweep lr=1e-3,3e-4".
"""

from __future__ import annotations

# Overrides that say where a run logs or writes, not what it is: left out of run names.
_NOT_IN_NAME = ("paths.", "logger.", "hydra.")


def override_key(override: str) -> str:
    """The key an override sets: "+model.widht=3" -> "model.widht", "model=resnet" -> "model"."""
    return override.partition("=")[0].lstrip("+~")


def model_name(model_cfg) -> str:
    """The model's short name, from its builder's module: affectexp.models.resnet.build_resnet -> "resnet"."""
    target = str(model_cfg["_target_"])
    return target.rsplit(".", 2)[-2] if target.count(".") >= 2 else target


def override_parts(overrides: list[str], keys: list[str] = ()) -> list[str]:
    """The overrides that say what a run is (of `keys` only, when given), shortened:
    ["optimizer.lr=3e-4", "augmentation=strong", "paths.root=/x"] -> ["lr=3e-4", "augmentation=strong"]."""
    parts: dict[str, str] = {}
    for override in overrides:
        key, value = override_key(override), override.partition("=")[2]
        if key.startswith(_NOT_IN_NAME) or (keys and key not in keys):
            continue
        parts.pop(key, None)  # a key given twice: its last value is the one the run used
        parts[key] = f"{key.rsplit('.', 1)[-1]}={value}"
    return list(parts.values())


def run_name(model: str, overrides: list[str], keys: list[str] = ()) -> str:
    """A run's name from its model and the overrides that made it (see override_parts; a
    model choice is the model's name itself): "resnet lr=3e-4 augmentation=strong"."""
    return " ".join([model, *(p for p in override_parts(overrides, keys) if not p.startswith("model="))])


def sweep_name(overrides: list[str], swept: list[str]) -> str:
    """A sweep's parent run name from what it varies: "sweep lr=1e-3,3e-4" (an Optuna
    sweeper's keys, whose values are chosen later, by name: "sweep lr dropout")."""
    return " ".join(["sweep", *(override_parts(overrides, swept) or [key.rsplit(".", 1)[-1] for key in swept])])
