"""One experiment's overrides, handed to each step of a pipeline: preprocess, train, evaluate.

A pipeline is given train.py's overrides (`model=resnet experiment=quick48 cache.size=48`). The
other steps must build and read the cache that training reads, so they get what names it as the
composed training config has it (the data set and class set chosen, the face size and colour,
whether set on the command line or by an experiment preset). Each step takes the overrides its
own config has a key or group for (num_workers: preprocess; model: train; dataset.*: all three). Used by the MLflow Project's pipeline and the SageMaker one.
"""

from __future__ import annotations

from dataclasses import dataclass

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

from affectexp.config import CONF_DIR
from affectexp.errors import ConfigError
from affectexp.tasks.names import override_key
from affectexp.training.objectives import check_objective

STEPS = ("preprocess", "train", "evaluate")


@dataclass(frozen=True)
class StepOverrides:
    """Each step's overrides, and the objective the evaluation step reports (split and metric)."""

    preprocess: list[str]
    train: list[str]
    evaluate: list[str]
    objective_split: str  # the split evaluation reports: trainer.objective's ("val" for val_accuracy), or split=
    objective_metric: str  # its metric in evaluation.json ("accuracy")

    def of(self, step: str) -> list[str]:
        return getattr(self, step)


def compose_step(step: str, overrides: list[str], hydra: bool = False) -> DictConfig:
    """The entry config of `step` composed as its script would (hydra: with Hydra's own part,
    which records the groups' choices)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(step, overrides=list(overrides), return_hydra_config=hydra)


def known_keys(step: str) -> dict[str, str]:
    """The top-level keys of `step`'s entry config, each "group" (a config group's choice),
    "node" (keys below it) or "leaf" (a value)."""
    cfg = compose_step(step, [], hydra=True)
    plain = OmegaConf.to_container(cfg, resolve=False)  # unresolved: mandatory values (model_uri) are unset here
    kinds = {key: "node" if isinstance(value, dict) else "leaf" for key, value in plain.items() if key != "hydra"}
    return {**kinds, **{group: "group" for group in cfg.hydra.runtime.choices}}


def applies(override: str, keys: dict[str, str]) -> bool:
    """Whether a step whose top-level keys are `keys` (known_keys) takes `override`: its group's
    choice, a key below a node ("split.val_fraction": preprocess's split), a leaf's value
    ("split=test": evaluate's)."""
    key = override_key(override)
    kind = keys.get(key.split("/")[0]) if "/" in key else keys.get(key.split(".")[0])
    if kind is None:
        return False
    return kind == "group" or (kind == "node") == ("." in key)


def step_overrides(overrides: list[str]) -> StepOverrides:
    """The experiment's `overrides` for each step of the pipeline (see the module's docstring);
    ConfigError naming an override no step has a key for, and a bad one stops here with Hydra's
    message, before any step runs."""
    keys = {step: known_keys(step) for step in STEPS}
    own = {step: [o for o in overrides if applies(o, keys[step])] for step in STEPS}
    unknown = [o for o in overrides if not any(o in own[step] for step in STEPS)]
    if unknown:
        raise ConfigError(f"{override_key(unknown[0])}: no step of the pipeline has this key ({unknown[0]!r}); "
                          "check its spelling, or add it with + as on train.py's command line")
    train = compose_step("train", own["train"], hydra=True)
    choices = train.hydra.runtime.choices
    cache = [f"dataset={choices.dataset}", f"classes={choices.classes}", f"cache.size={train.cache.size}",
             f"cache.color={train.cache.color}"]
    objective = str(train.trainer.objective)
    check_objective(objective)
    split, _, metric = objective.partition("_")
    split = next((o.partition("=")[2] for o in reversed(own["evaluate"]) if override_key(o) == "split"), split)
    named = {override_key(o) for o in cache}

    def share(step: str, first: list[str]) -> list[str]:  # the cache's keys once, then the step's own overrides
        return [*cache, *first, *(o for o in own[step] if override_key(o) not in named)]

    return StepOverrides(share("preprocess", []), own["train"], share("evaluate", [f"split={split}"]), split, metric)

