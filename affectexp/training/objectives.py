"""The objective a run reports and sweepers and tuners optimise: <split>_<metric> of the kept
model's evaluation ("val_accuracy", "test_macro_f1"), and the MLflow metric that holds it."""

from __future__ import annotations

from affectexp import tracking
from affectexp.errors import ConfigError

OBJECTIVE_SPLITS = ("val", "test")
OBJECTIVE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


def check_objective(objective: str) -> None:
    """trainer.objective must be <split>_<metric> of what evaluation reports; checked before training."""
    split, _, name = objective.partition("_")
    if split not in OBJECTIVE_SPLITS or name not in OBJECTIVE_METRICS:
        choices = [f"{s}_{m}" for s in OBJECTIVE_SPLITS for m in OBJECTIVE_METRICS]
        raise ConfigError(f"trainer.objective: {objective!r} is never reported; choose from {choices}")


def objective_metric(objective: str) -> str:
    """The MLflow metric that holds `objective`: "val_accuracy" -> "best_val/accuracy" (the kept
    model's evaluation; the per-epoch val/accuracy is Keras' own), "test_macro_f1" -> "test/macro_f1"."""
    check_objective(objective)
    split, _, name = objective.partition("_")
    return tracking.evaluation_metric_name(split, name)


def objective_value(objective: str, metrics_by_split: dict[str, dict]) -> float:
    """The value of `objective` ("val_accuracy", "test_macro_f1", ...) among the evaluated splits."""
    check_objective(objective)
    split, _, name = objective.partition("_")
    if name not in metrics_by_split.get(split, {}):
        raise ConfigError(f"trainer.objective: {objective!r}: the cache has no {split} split")
    return metrics_by_split[split][name]
