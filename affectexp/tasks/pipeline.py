"""The pipeline as one MLflow run: preprocess -> train -> evaluate -> register, each step a child run.

The same steps as the SageMaker Pipeline (affectexp/pipelines/sagemaker.py), run here in one
process: each step is its own task (preprocess, train, evaluate) handed its config and the
pipeline's run as its explicit parent (tracking.Parent). Every step reads the experiment's
overrides (train.py's), each taking its share (pipelines/steps.py); runs go to the training
config's logger. The model is registered (logger.register_model) when the evaluated objective
reaches `threshold`, as the SageMaker pipeline's condition step decides.
"""

from __future__ import annotations

import logging
from pathlib import Path

from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from affectexp import tracking
from affectexp.config import LoggerConfig
from affectexp.data.cache import FaceCache
from affectexp.errors import ConfigError
from affectexp.inference.model import logged_model_uri, register_run_model
from affectexp.pipelines.steps import STEPS, compose_step, step_overrides
from affectexp.tasks.evaluate import evaluate
from affectexp.tasks.names import model_name, run_name
from affectexp.tasks.preprocess import run_preprocess
from affectexp.tasks.train import train_and_evaluate

log = logging.getLogger(__name__)

PIPELINE_TAG = "affectexp.pipeline_run_id"  # on each step's run: the pipeline run it belongs to
STEP_TAG = "affectexp.pipeline_step"


def step_parent(pipeline_run_id: str, step: str) -> tracking.Parent:
    return tracking.Parent(pipeline_run_id, step, {PIPELINE_TAG: pipeline_run_id, STEP_TAG: step})


def run_pipeline(overrides: list[str], threshold: float = 0.0) -> float:
    """preprocess, train and evaluate train.py's `overrides` under one pipeline run; returns the
    evaluated objective (trainer.objective's split and metric, of the trained model)."""
    shares = step_overrides(overrides)
    configs = {step: compose_step(step, shares.of(step)) for step in STEPS}
    logger: LoggerConfig = OmegaConf.to_object(configs["train"].logger)
    experiment_id = tracking.configure_logger(logger)
    name = "pipeline " + run_name(model_name(configs["train"].model), overrides)
    tags = {"affectexp.task": "pipeline", **tracking.job_tags(logger.job_name)}
    with tracking.tracked_run(experiment_id, name, None, None, tags=tags) as run:
        pipeline_id = run.info.run_id
        tracking.log_params({"pipeline.overrides": " ".join(overrides), "pipeline.threshold": str(threshold)})
        preprocess_step(configs["preprocess"], experiment_id, step_parent(pipeline_id, "preprocess"))
        train_and_evaluate(configs["train"], step_parent(pipeline_id, "train"))
        train_run = step_run(experiment_id, pipeline_id, "train")
        configs["evaluate"].model_uri = logged_model_uri(train_run.info.run_id)
        value = evaluate(configs["evaluate"], step_parent(pipeline_id, "evaluate"))
        objective = f"{shares.objective_split}/{shares.objective_metric}"
        tracking.log_metrics_once({f"evaluated/{objective}": value})
        if value >= threshold:
            register_run_model(train_run.info.run_id, logger.register_model, logger.register_alias)
        elif logger.register_model:
            log.info("Not registering %s: evaluated %s %.4f is below the threshold %.4f", logger.register_model,
                     objective, value, threshold)
    return value


def run_step(step: str, overrides: list[str], model_uri: str | None = None) -> None:
    """One step alone (its run a top-level one), reading the experiment's `overrides` as the
    pipeline does; evaluate evaluates `model_uri`."""
    shares = step_overrides(overrides)
    cfg = compose_step(step, shares.of(step))
    if step == "preprocess":
        logger: LoggerConfig = OmegaConf.to_object(compose_step("train", shares.train).logger)
        preprocess_step(cfg, tracking.configure_logger(logger))
    elif step == "train":
        train_and_evaluate(cfg, None, run_name(model_name(cfg.model), overrides))
    else:
        if not model_uri:
            raise ConfigError("model_uri: no value given; pass the model to evaluate (runs:/<run id>/model, ...)")
        cfg.model_uri = model_uri
        evaluate(cfg)


def preprocess_step(cfg, experiment_id: str, parent: tracking.Parent | None = None) -> None:
    """preprocess.py's task in a run (a child of `parent` when given): its settings as params,
    the cache as its dataset input, the faces written and rows skipped as metrics."""
    with tracking.tracked_run(experiment_id, None if parent else "preprocess", None, parent,
                              tags={"affectexp.task": "preprocess"}):
        tracking.log_config_params(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
        summary = run_preprocess(cfg)
        with FaceCache(summary.cache_path) as cache:
            fingerprint = cache.fingerprint
        sizes = {split: sum(per_class.values()) for split, per_class in summary.written.items()}
        tracking.log_cache_input(str(summary.cache_path), Path(summary.cache_path).stem, fingerprint, sizes)
        tracking.log_metrics_once({"preprocess/faces_written": summary.faces_written,
                                   **{f"preprocess/skipped/{reason}": n for reason, n in summary.skipped.items()}})


def step_run(experiment_id: str, pipeline_run_id: str, step: str):
    """The run of `step` under the pipeline run."""
    [found] = MlflowClient().search_runs([experiment_id], filter_string=(
        f"tags.`{PIPELINE_TAG}` = '{pipeline_run_id}' AND tags.`{STEP_TAG}` = '{step}'"))
    return found
