"""Metric names and logging each value exactly once.

Names are grouped by `/`, as MLflow's chart view groups prefixes, with one meaning each:

- per epoch (step = epoch number): `train/loss`, `train/accuracy`, `train/learning_rate`,
  `val/loss`, `val/accuracy` (Keras' `loss`, `val_accuracy`, ... renamed: epoch_metric_name);
- once, the kept model's evaluation (evaluation_metric_name): `best_val/accuracy`,
  `best_val/macro_f1`, `best_val/f1/happy` on the validation split, `test/accuracy`,
  `test/balanced_accuracy`, `test/macro_f1`, `test/f1/happy` on the test split;
- `train/seconds`: time spent fitting; `system/*`: MLflow's own system metrics.
"""

from __future__ import annotations

from collections.abc import Mapping

import mlflow
from mlflow.tracking import MlflowClient

# The kept model's evaluation on the validation split is "best_val/*", apart from the
# per-epoch "val/*" curves, so the two never mix in one metric history.
EVALUATION_PREFIX = {"val": "best_val", "test": "test"}
TRAIN_SECONDS = "train/seconds"


def epoch_metric_name(keras_name: str) -> str:
    """Keras' per-epoch log name -> its MLflow name: "val_loss" -> "val/loss", "loss" -> "train/loss"."""
    if keras_name.startswith("val_"):
        return "val/" + keras_name.removeprefix("val_")
    return "train/" + keras_name


def evaluation_metric_name(split: str, name: str) -> str:
    """An evaluation result's MLflow name: ("val", "accuracy") -> "best_val/accuracy",
    ("test", "f1/happy") -> "test/f1/happy"; another split is its own prefix."""
    return f"{EVALUATION_PREFIX.get(split, split)}/{name}"


def log_epoch_metrics(logs: Mapping[str, float], epoch: int) -> None:
    """One epoch's Keras logs on the active run, renamed (epoch_metric_name), in one batch:
    the store keeps all of them or none."""
    mlflow.log_metrics({epoch_metric_name(name): value for name, value in logs.items()}, step=epoch)


def log_missing_epochs(history: list[Mapping[str, float]]) -> None:
    """Log each epoch of `history` (Keras logs; epoch = 1-based position) that the active run lacks.

    An epoch arrives whole or not at all (log_epoch_metrics), so one metric's history tells
    which epochs the run has.
    """
    run_id = mlflow.active_run().info.run_id
    client = MlflowClient()
    logged: dict[str, set[int]] = {}
    for epoch, logs in enumerate(history, 1):
        key = epoch_metric_name(min(logs))
        if key not in logged:
            logged[key] = {metric.step for metric in client.get_metric_history(run_id, key)}
        if epoch not in logged[key]:
            log_epoch_metrics(logs, epoch)


def log_metrics_once(metrics: Mapping[str, float]) -> None:
    """Log those of `metrics` (step-less: evaluation results) that the active run lacks, so a
    rerun that repeats an evaluation after a kill does not record it twice."""
    run_id = mlflow.active_run().info.run_id
    present = MlflowClient().get_run(run_id).data.metrics
    missing = {name: value for name, value in metrics.items() if name not in present}
    if missing:
        mlflow.log_metrics(missing)
