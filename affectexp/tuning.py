"""KerasTuner searches over config values: one MLflow parent run per search, a nested run per trial.

The search space is declared in config (conf/tuner/*.yaml) over the same keys the command line
uses (`optimizer.lr`, `model.widths`) and over whole config groups (`augmentation: [light,
strong]`); every trial builds its model and input pipeline with the same functions as plain
training, from the config with the trial's values applied.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras_tuner as kt
import mlflow
import pandas as pd
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from affectexp import tracking
from affectexp.errors import UserInputError
from affectexp.training.inputs import FollowEpochs
from affectexp.training.run import (
    MlflowEpochMetrics,
    StopOnNaN,
    build_model,
    check_objective,
    config_fingerprint,
    evaluate_and_log,
    loss_class_weights,
    make_batches,
    objective_value,
    open_checked_cache,
)

log = logging.getLogger(__name__)

TUNERS = {"random": kt.RandomSearch, "bayesian": kt.BayesianOptimization, "hyperband": kt.Hyperband}
# What a trial's fit reports per epoch, and so what a search can optimise.
REPORTED_METRICS = {"val_accuracy": "max", "val_loss": "min", "accuracy": "max", "loss": "min"}
DIMENSION_TYPES = ("float", "int", "choice", "boolean")
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


class SearchError(UserInputError):
    """A search that cannot start: unknown tuner, malformed space, unreported objective."""


@dataclass(frozen=True)
class Dimension:
    """One searched config value: `key` is a dotted config key or a config group's name."""

    key: str
    kind: str
    spec: dict

    def declare(self, hp: kt.HyperParameters) -> Any:
        """Register the dimension with KerasTuner and return this trial's value (decoded)."""
        spec = self.spec
        if self.kind == "float":
            return hp.Float(self.key, spec["min"], spec["max"], step=spec.get("step"),
                            sampling=spec.get("sampling", "linear"))
        if self.kind == "int":
            return hp.Int(self.key, spec["min"], spec["max"], step=spec.get("step", 1),
                          sampling=spec.get("sampling", "linear"))
        if self.kind == "boolean":
            return hp.Boolean(self.key)
        # KerasTuner choices hold scalars only: lists (e.g. model.widths) travel as JSON.
        encoded = [json.dumps(v) for v in spec["values"]]
        return json.loads(hp.Choice(self.key, encoded))


def space_leaves(space: dict, prefix: str = "") -> dict[str, Any]:
    """Nested or dotted space -> {"optimizer.lr": spec, ...}; a node with a `type` is a dimension."""
    leaves = {}
    for key, node in space.items():
        path = f"{prefix}{key}"
        if isinstance(node, dict) and "type" not in node and node:
            leaves.update(space_leaves(node, path + "."))
        else:
            leaves[path] = node
    return leaves


def parse_space(space: Any, cfg: DictConfig, conf_dir: Path = CONF_DIR) -> list[Dimension]:
    """The search space from config, checked before any trial; raises SearchError naming the key."""
    if not space:
        raise SearchError("tuner.space: the search space is empty; declare at least one dimension")
    dimensions = []
    for key, spec in space_leaves(OmegaConf.to_container(space, resolve=True)).items():
        where = f"tuner.space.{key}"
        if not isinstance(spec, dict) or spec.get("type") not in DIMENSION_TYPES:
            raise SearchError(f"{where}: needs a type, one of {list(DIMENSION_TYPES)}; found {spec!r}")
        kind = spec["type"]
        if kind in ("float", "int") and not ("min" in spec and "max" in spec and spec["min"] < spec["max"]):
            raise SearchError(f"{where}: a {kind} needs min < max; found {spec!r}")
        if kind == "choice" and not (isinstance(spec.get("values"), list) and spec["values"]):
            raise SearchError(f"{where}: a choice needs a non-empty list of values; found {spec!r}")
        if _is_group(key, conf_dir):
            missing = [v for v in spec.get("values", []) if not (conf_dir / key / f"{v}.yaml").exists()]
            if kind != "choice" or missing:
                raise SearchError(f"{where}: a config group takes a choice of its options; unknown {missing}")
        elif OmegaConf.select(cfg, key, default=_MISSING) is _MISSING:
            raise SearchError(f"{where}: {key} is not a config key or a config group")
        dimensions.append(Dimension(key, kind, spec))
    return dimensions


_MISSING = object()


def _is_group(key: str, conf_dir: Path) -> bool:
    return "." not in key and (conf_dir / key).is_dir()


def apply_values(cfg: DictConfig, values: dict[str, Any], conf_dir: Path = CONF_DIR) -> DictConfig:
    """A copy of cfg with a trial's values: config keys set, config groups replaced by an option."""
    trial = copy.deepcopy(cfg)
    with open_dict(trial):
        for key, value in values.items():
            if _is_group(key, conf_dir):
                trial[key] = _group_option(trial, key, conf_dir / key / f"{value}.yaml")
            else:
                OmegaConf.update(trial, key, value, merge=False)
    return trial


def _group_option(cfg: DictConfig, group: str, path: Path) -> DictConfig:
    """A group option's file as a node that fits the group's typed schema, if it has one."""
    option = OmegaConf.load(path)
    schema = OmegaConf.get_type(cfg, group)
    return OmegaConf.merge(OmegaConf.structured(schema), option) if dataclasses.is_dataclass(schema) else option


class ConfigHyperModel(kt.HyperModel):
    """Builds and fits each trial's model with plain training's functions."""

    def __init__(self, cfg: DictConfig, dimensions: list[Dimension], face_shape, num_classes: int,
                 train_size: int, conf_dir: Path = CONF_DIR):
        super().__init__()
        self.cfg, self.dimensions, self.conf_dir = cfg, dimensions, conf_dir
        self.face_shape, self.num_classes, self.train_size = face_shape, num_classes, train_size

    def trial_config(self, hp: kt.HyperParameters) -> DictConfig:
        values = {d.key: d.declare(hp) for d in self.dimensions}
        return apply_values(self.cfg, values, self.conf_dir)

    def build(self, hp: kt.HyperParameters):
        cfg = self.trial_config(hp)
        steps = cfg.trainer.steps_per_epoch or math.ceil(self.train_size / cfg.trainer.batch_size)
        return build_model(cfg, self.face_shape, self.num_classes, steps)

    def fit(self, hp: kt.HyperParameters, model, *args, **kwargs):
        cfg = self.trial_config(hp)
        train_batches, val_batches = make_batches(cfg)
        callbacks = [*kwargs.pop("callbacks", []), FollowEpochs(train_batches), StopOnNaN(), MlflowEpochMetrics()]
        weights = loss_class_weights(str(cfg.trainer.balance), train_batches.labels, self.num_classes)
        kwargs.setdefault("epochs", cfg.trainer.epochs)
        try:
            return model.fit(train_batches, validation_data=val_batches, callbacks=callbacks, class_weight=weights,
                             verbose=0, shuffle=False, **kwargs)
        finally:
            train_batches.close()
            val_batches.close()


def tracked_tuner(base: type) -> type:
    """`base` (a KerasTuner tuner class) with each trial logged as a nested MLflow run.

    keras-tuner 1.3 removed its Logger hook; the trial hooks are the supported place.
    """

    class TrackedTuner(base):
        parent_run_id: str | None = None  # the search's run; set before search()

        def on_trial_begin(self, trial):
            super().on_trial_begin(trial)
            # An explicit parent: a distributed worker has no active parent run of its own.
            mlflow.start_run(run_name=f"trial {trial.trial_id}", nested=True, parent_run_id=self.parent_run_id,
                             tags={"affectexp.trial_id": trial.trial_id})
            mlflow.log_params({k: str(v) for k, v in trial.hyperparameters.values.items()})

        def on_trial_end(self, trial):
            super().on_trial_end(trial)  # sets trial.score and best_step
            trial = self.oracle.get_trial(trial.trial_id)
            if trial.score is not None:
                mlflow.log_metric("score", float(trial.score))
            for name in trial.metrics.metrics:
                best = trial.metrics.get_best_value(name)
                if best is not None:
                    mlflow.log_metric(f"best_{name}", float(best))
            mlflow.end_run("FINISHED" if trial.status == "COMPLETED" else "FAILED")

    TrackedTuner.__name__ = f"Tracked{base.__name__}"
    return TrackedTuner


def close_interrupted_trials(parent_run_id: str) -> None:
    """Mark the trial runs an interrupted search left RUNNING as KILLED; KerasTuner reruns them."""
    client = mlflow.tracking.MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    stale = client.search_runs([experiment_id], filter_string=(
        f"tags.mlflow.parentRunId = '{parent_run_id}' and attributes.status = 'RUNNING'"))
    for run in stale:
        client.set_terminated(run.info.run_id, "KILLED")


def check_search(cfg: DictConfig) -> tuple[list[Dimension], str]:
    """Everything about the search that can be wrong, checked before any trial: (space, direction)."""
    if cfg.tuner.type not in TUNERS:
        raise SearchError(f"tuner.type: unknown tuner {cfg.tuner.type!r}; choose from {list(TUNERS)}")
    if cfg.tuner.objective not in REPORTED_METRICS:
        raise SearchError(f"tuner.objective: {cfg.tuner.objective!r} is never reported by training; "
                          f"choose from {list(REPORTED_METRICS)}")
    return parse_space(cfg.tuner.space, cfg), REPORTED_METRICS[cfg.tuner.objective]


def build_tuner(cfg: DictConfig, hypermodel: ConfigHyperModel, project_dir: Path, direction: str):
    tuner_cfg = cfg.tuner
    budget = {"max_epochs": cfg.trainer.epochs, "factor": tuner_cfg.hyperband_factor} \
        if tuner_cfg.type == "hyperband" else {"max_trials": tuner_cfg.max_trials}
    return tracked_tuner(TUNERS[tuner_cfg.type])(
        hypermodel=hypermodel,
        objective=kt.Objective(tuner_cfg.objective, direction=direction),
        seed=tuner_cfg.seed,
        directory=str(project_dir.parent),
        project_name=project_dir.name,
        overwrite=False,  # a rerun of the same command continues the search
        **budget,
    )


def leaderboard(tuner) -> pd.DataFrame:
    """One row per trial: id, status, score and hyperparameters, best first."""
    rows = [{"trial_id": t.trial_id, "status": t.status, "score": t.score, **t.hyperparameters.values}
            for t in tuner.oracle.trials.values()]
    ascending = tuner.oracle.objective.direction == "min"
    return pd.DataFrame(rows).sort_values("score", ascending=ascending, na_position="last")


def best_values(tuner, dimensions: list[Dimension]) -> dict[str, Any]:
    """The best trial's value of each searched dimension, decoded."""
    hp = tuner.get_best_hyperparameters(1)[0]
    return {d.key: d.declare(hp) for d in dimensions}


def experiment_yaml(values: dict[str, Any], conf_dir: Path = CONF_DIR) -> str:
    """A `# @package _global_` experiment file that reproduces the given values."""
    groups = {k: v for k, v in values.items() if _is_group(k, conf_dir)}
    keys = OmegaConf.create()
    for key, value in values.items():
        if key not in groups:
            OmegaConf.update(keys, key, value, force_add=True)
    lines = ["# @package _global_", "# Best trial of a KerasTuner search (written by affectexp.tuning)."]
    if groups:
        lines += ["defaults:"] + [f"  - override /{k}: {v}" for k, v in groups.items()]
    body = OmegaConf.to_yaml(keys) if keys else ""
    return "\n".join(lines) + "\n" + body


def write_experiment(cfg: DictConfig, values: dict[str, Any]) -> Path:
    """Write the best values as conf/experiment/<tuner.export_name>.yaml (under tuner.export_config_dir)."""
    root = Path(cfg.tuner.export_config_dir) if cfg.tuner.export_config_dir else CONF_DIR
    path = root / "experiment" / f"{cfg.tuner.export_name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(experiment_yaml(values))
    return path


def distributed_role() -> str | None:
    """"chief", "worker" or None, read as KerasTuner reads its KERASTUNER_* variables."""
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return None
    return "chief" if "chief" in os.environ.get("KERASTUNER_TUNER_ID", "") else "worker"


def wait_for_parent_run(project_dir: Path, timeout_s: float) -> str:
    """The search's run id, written by the chief into the shared project directory."""
    id_file = project_dir / tracking.RUN_ID_FILE
    deadline = time.monotonic() + timeout_s
    while not id_file.exists():
        if time.monotonic() > deadline:
            raise SearchError(f"{id_file}: no chief started this search within {timeout_s:.0f} s "
                              "(start the chief with KERASTUNER_TUNER_ID=chief)")
        time.sleep(1)
    return id_file.read_text().strip()


def search(cfg: DictConfig) -> float:
    """Run the configured search; returns the best model's cfg.trainer.objective on the test split.

    In KerasTuner's distributed mode the chief serves the oracle and holds the search's run;
    each worker runs trials, logged as children of the chief's run, and returns NaN.
    """
    dimensions, direction = check_search(cfg)
    check_objective(cfg.trainer.objective)
    with open_checked_cache(cfg) as cache:
        face_shape, class_names, train_size = cache.face_shape, list(cache.class_names), cache.split_size("train")
    project_dir = Path(cfg.paths.runs_dir) / "tuner" / f"{cfg.tuner.type}-{config_fingerprint(cfg)}"
    experiment_id = tracking.configure_logger(cfg.logger)
    hypermodel = ConfigHyperModel(cfg, dimensions, face_shape, len(class_names), train_size)
    if distributed_role() == "worker":
        tuner = build_tuner(cfg, hypermodel, project_dir, direction)
        tuner.parent_run_id = wait_for_parent_run(project_dir, cfg.tuner.worker_wait_s)
        tuner.search(epochs=cfg.trainer.epochs)
        return float("nan")
    run_name = cfg.logger.run_name or f"search {cfg.tuner.type}"
    with tracking.tracked_run(experiment_id, run_name, project_dir) as parent:
        tracking.log_params(tracking.flatten_params(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)))
        mlflow.set_tag("affectexp.search", cfg.tuner.type)
        close_interrupted_trials(parent.info.run_id)
        tuner = build_tuner(cfg, hypermodel, project_dir, direction)
        tuner.parent_run_id = parent.info.run_id
        tuner.search(epochs=cfg.trainer.epochs)
        metrics = report_search(cfg, tuner, dimensions, class_names)
        log.info("Reproduce the best trial with: python train.py experiment=%s (MLflow run %s)",
                 cfg.tuner.export_name, parent.info.run_id)
    return objective_value(cfg.trainer.objective, {"test": metrics})


def report_search(cfg: DictConfig, tuner, dimensions: list[Dimension], class_names: list[str]) -> dict:
    """Into the search's run: leaderboard, best values (also as an experiment file) and the
    best model's test metrics, which are returned."""
    board = leaderboard(tuner)
    best = best_values(tuner, dimensions)
    experiment_path = write_experiment(cfg, best)
    mlflow.log_params({f"best.{k}": json.dumps(v) if isinstance(v, (list, dict)) else str(v)
                       for k, v in best.items()})
    mlflow.log_metric(f"best_{cfg.tuner.objective}", float(board["score"].iloc[0]))
    with tracking.artifact_dir() as folder:
        board.to_csv(folder / "leaderboard.csv", index=False)
        (folder / experiment_path.name).write_text(experiment_path.read_text())
    model = tuner.get_best_models(1)[0]
    log.info("Best trial %s of %d", board["trial_id"].iloc[0], len(board))
    return evaluate_and_log(model, cfg.cache.path, "test", class_names, cfg.trainer.batch_size)
