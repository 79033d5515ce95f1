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
from omegaconf import DictConfig

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
    objective_split: str  # the split evaluation reports: trainer.objective's ("val" for val_accuracy)
    objective_metric: str  # its metric in evaluation.json ("accuracy")

    def of(self, step: str) -> list[str]:
        return getattr(self, step)


def compose_step(step: str, overrides: list[str], hydra: bool = False) -> DictConfig:
    """The entry config of `step` composed as its script would (hydra: with Hydra's own part,
    which records the groups' choices)."""
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(step, overrides=list(overrides), return_hydra_config=hydra)


def known_keys(step: str) -> set[str]:
    """The top-level keys and config groups of `step`'s entry config."""
    cfg = compose_step(step, [], hydra=True)
    return {key for key in cfg if key != "hydra"} | set(cfg.hydra.runtime.choices)


def step_overrides(overrides: list[str]) -> StepOverrides:
    """The experiment's `overrides` for each step of the pipeline (see the module's docstring);
    ConfigError naming an override no step has a key for, and a bad one stops here with Hydra's
    message, before any step runs."""
    keys = {step: known_keys(step) for step in STEPS}
    own = {step: [o for o in overrides if top_key(o) in keys[step]] for step in STEPS}
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
    named = {override_key(o) for o in cache}

    def share(step: str) -> list[str]:  # the cache's keys once, then the step's own overrides
        return [*cache, *(o for o in own[step] if override_key(o) not in named)]

    return StepOverrides(share("preprocess"), own["train"], [*share("evaluate"), f"split={split}"], split, metric)


def top_key(override: str) -> str:
    """The top-level key or group an override sets: "model.widths=[8]" -> "model", "optimizer/schedule=x" -> "optimizer"."""
    return override_key(override).split(".")[0].split("/")[0]
