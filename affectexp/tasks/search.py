"""KerasTuner searches over config values: one MLflow parent run per search, a nested run per trial.

The search space is declared in config (conf/tuner/*.yaml) over the same keys the command line
uses (`optimizer.lr`, `model.widths`) and over whole config groups (`augmentation: [light,
strong]`). A trial is a training run like any other (tasks.train.train_and_evaluate): its
config is composed by Hydra from the search's command-line overrides plus the trial's values,
and its MLflow run is a child of the search's run. KerasTuner's oracle only chooses values.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras_tuner as kt
import mlflow
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from affectexp import tracking
from affectexp.config import CONF_DIR
from affectexp.inference.model import register_run_model
from affectexp.errors import UserInputError
from affectexp.tasks.names import model_name, override_key, run_name
from affectexp.training.caches import open_checked_cache
from affectexp.tasks.train import check_config, fingerprint_of, read_config, train_and_evaluate
from affectexp.training.objectives import check_objective, objective_metric, objective_value

log = logging.getLogger(__name__)

TUNERS = {"random": kt.RandomSearch, "bayesian": kt.BayesianOptimization, "hyperband": kt.Hyperband}
TRIAL_TAG = "affectexp.trial_id"
DIMENSION_TYPES = ("float", "int", "choice", "boolean")


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


def override_value(value: Any) -> str:
    """A trial's value in Hydra's override grammar: 0.0032, true, [16,32,64], light."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    if isinstance(value, float):
        # KerasTuner's stepped floats carry float noise (0.1 + 2 * 0.1 = 0.30000000000000004);
        # 10 significant digits are far finer than any step and read as the value meant.
        return f"{value:.10g}"
    return str(value)


def trial_overrides(values: dict[str, Any]) -> list[str]:
    """The command-line overrides that give a trial's values: ["optimizer.lr=0.0032", "augmentation=strong"]."""
    return [f"{key}={override_value(value)}" for key, value in values.items()]


def merged_overrides(base: list[str], overrides: list[str]) -> list[str]:
    """`base` less the keys that `overrides` set, then `overrides`: one value per key, so the
    printed command says what the run used."""
    keys = {override_key(o) for o in overrides}
    return [o for o in base if override_key(o) not in keys] + list(overrides)


def training_overrides(search_overrides: list[str]) -> list[str]:
    """The search's overrides less its tuner choice: what every trial trains with."""
    return [o for o in search_overrides if not override_key(o).startswith("tuner")]


def compose_train_config(overrides: list[str]) -> DictConfig:
    """train.py's config for these overrides, composed by Hydra as the command line would be
    (defaults lists and packages apply), inside train.py's Hydra app or outside it."""
    if GlobalHydra.instance().is_initialized():
        return compose("train", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=overrides)


def trial_name(number: int, model: str, values: dict[str, Any]) -> str:
    """"trial 3 resnet lr=0.0032 dropout=0.2 augmentation=strong": the same number on the
    console and in MLflow, then the run's name (names.run_name) from the trial's values."""
    shown = {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in values.items()}
    return f"trial {number} " + run_name(model, trial_overrides(shown))


def tracked_tuner(base: type) -> type:
    """`base` (a KerasTuner tuner class) whose trials are tracked training runs.

    run_trial trains the trial's config with train_and_evaluate, as a child of the search's
    run, and reports its objective to the oracle; KerasTuner builds and fits no model itself.
    Hyperband's trials train `tuner/epochs` epochs, each from scratch.
    """

    class TrackedTuner(base):
        parent_run_id: str | None = None  # the search's run; set before search()
        dimensions: list[Dimension] = []
        base_overrides: list[str] = []
        objective_name: str = ""

        def run_trial(self, trial, *args, **kwargs):
            hp = trial.hyperparameters
            values = {d.key: d.declare(hp) for d in self.dimensions}
            chosen = trial_overrides(values)
            if "tuner/epochs" in hp.values:
                chosen.append(f"trainer.epochs={hp.values['tuner/epochs']}")
            overrides = merged_overrides(self.base_overrides, chosen)
            cfg = compose_train_config(overrides)
            name = trial_name(int(trial.trial_id) + 1, model_name(cfg.model), values)
            log.info("%s: python train.py %s", name, " ".join(overrides))
            parent = tracking.Parent(self.parent_run_id, name, {TRIAL_TAG: trial.trial_id})
            metrics = train_and_evaluate(cfg, parent)
            return {self.objective_name: objective_value(self.objective_name, metrics)}

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


def check_search(cfg: DictConfig) -> list[Dimension]:
    """Everything about the search that can be wrong, checked before any trial: its space."""
    if cfg.tuner.type not in TUNERS:
        raise SearchError(f"tuner.type: unknown tuner {cfg.tuner.type!r}; choose from {list(TUNERS)}")
    try:
        check_objective(cfg.tuner.objective, list(cfg.head.outputs))
    except UserInputError as error:
        raise SearchError(str(error).replace("trainer.objective", "tuner.objective", 1)) from None
    return parse_space(cfg.tuner.space, cfg)


def build_tuner(cfg: DictConfig, dimensions: list[Dimension], base_overrides: list[str], project_dir: Path):
    tuner_cfg = cfg.tuner
    budget = {"max_epochs": cfg.trainer.epochs, "factor": tuner_cfg.hyperband_factor} \
        if tuner_cfg.type == "hyperband" else {"max_trials": tuner_cfg.max_trials}
    space = kt.HyperParameters()
    for dimension in dimensions:
        dimension.declare(space)  # the oracle knows the whole space before the first trial
    tuner = tracked_tuner(TUNERS[tuner_cfg.type])(
        hypermodel=None,
        hyperparameters=space,
        objective=kt.Objective(tuner_cfg.objective, direction="max"),  # every reported objective is a score
        # KerasTuner draws a random seed for a falsy one (`seed or random.randint(...)`): offset
        # so that every tuner.seed, 0 included, repeats the same trials.
        seed=tuner_cfg.seed + 1,
        directory=str(project_dir.parent),
        project_name=project_dir.name,
        overwrite=False,  # a rerun of the same command continues the search
        **budget,
    )
    tuner.dimensions, tuner.base_overrides, tuner.objective_name = dimensions, base_overrides, tuner_cfg.objective
    return tuner


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
    lines = ["# @package _global_", "# Best trial of a KerasTuner search (written by affectexp.tasks.search)."]
    if groups:
        lines += ["defaults:"] + [f"  - override /{k}: {v}" for k, v in groups.items()]
    body = OmegaConf.to_yaml(keys) if keys else ""
    return "\n".join(lines) + "\n" + body


def write_experiment(cfg: DictConfig, values: dict[str, Any], project_dir: Path) -> Path:
    """Write the best values as <dir>/experiment/<tuner.export_name>.yaml, where dir is
    tuner.export_config_dir or the search's own folder (never the project's conf/)."""
    root = Path(cfg.tuner.export_config_dir) if cfg.tuner.export_config_dir else project_dir
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


def search(cfg: DictConfig, overrides: list[str]) -> float:
    """Run the configured search; returns the best trial's tuner.objective.

    overrides: the command line's overrides (cfg was composed from them); each trial is
    composed from them less the tuner choice, plus its values. In KerasTuner's distributed
    mode the chief serves the oracle and holds the search's run; each worker runs trials,
    logged as children of the chief's run, and returns NaN.
    """
    dimensions = check_search(cfg)
    settings, resolved = read_config(cfg)
    check_config(settings)  # what every trial shares (its optimizer, model, ...), before the search's run exists
    with open_checked_cache(settings):
        pass  # a missing or mismatched cache stops before the search's run exists
    project_dir = Path(cfg.paths.runs_dir) / "tuner" / f"{cfg.tuner.type}-{fingerprint_of(resolved)}"
    experiment_id = tracking.configure_logger(cfg.logger)
    base_overrides = training_overrides(overrides)
    if distributed_role() == "worker":
        tuner = build_tuner(cfg, dimensions, base_overrides, project_dir)
        tuner.parent_run_id = wait_for_parent_run(project_dir, cfg.tuner.worker_wait_s)
        tuner.search()
        return float("nan")
    run_name = cfg.logger.run_name or f"search {cfg.tuner.type}"
    with tracking.tracked_run(experiment_id, run_name, project_dir) as parent:
        mlflow.set_tag("affectexp.search", cfg.tuner.type)
        close_interrupted_trials(parent.info.run_id)
        tuner = build_tuner(cfg, dimensions, base_overrides, project_dir)
        tuner.parent_run_id = parent.info.run_id
        tuner.search()
        best = tracking.summarise_children(parent.info.run_id, objective_metric(cfg.tuner.objective))
        if best is None:  # KerasTuner prints a failed trial's traceback and goes on
            raise SearchError(f"no trial of the search finished (MLflow run {parent.info.run_id}); "
                              "the trials' errors are printed above")
        register_run_model(best.info.run_id, cfg.logger.register_model, cfg.logger.register_alias)
        values = best_values(tuner, dimensions)
        experiment = write_experiment(cfg, values, project_dir)
        mlflow.log_artifact(str(experiment))
        # The experiment sets the best values; a command-line override of the same key would win over it.
        others = [o for o in base_overrides if override_key(o) not in values]
        log.info("Best: %s (%s %.4f). Reproduce it with: python train.py --config-dir=%s experiment=%s %s",
                 best.info.run_name, cfg.tuner.objective, best_score(best, cfg.tuner.objective),
                 experiment.parent.parent, cfg.tuner.export_name, " ".join(others))
    return best_score(best, cfg.tuner.objective)


def best_score(run, objective: str) -> float:
    """A child run's value of `objective`."""
    return run.data.metrics[objective_metric(objective)]
