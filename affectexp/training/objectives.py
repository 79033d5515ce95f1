"""The objective a run reports and sweepers and tuners optimise: <split>_<metric> of the kept
model's evaluation ("val_accuracy", "test_macro_f1", "val_ccc_valence"), and the MLflow metric
that holds it."""

from __future__ import annotations

from collections.abc import Sequence

from affectexp import tracking
from affectexp.errors import ConfigError
from affectexp.training.metrics import AFFECT_DIMENSIONS, AFFECT_METRICS

OBJECTIVE_SPLITS = ("val", "test")
CLASSIFICATION_OBJECTIVES = ("accuracy", "balanced_accuracy", "macro_f1")
# Sweepers, tuners and best-child summaries maximise: every objective is a score, so RMSE (an
# error) is reported but is not one.
AFFECT_OBJECTIVES = tuple(f"{m}_{d}" for d in AFFECT_DIMENSIONS for m in AFFECT_METRICS if m != "rmse")
OBJECTIVE_METRICS = CLASSIFICATION_OBJECTIVES + AFFECT_OBJECTIVES
# Which output reports each metric.
_OUTPUT_OF = {**{m: "expression" for m in CLASSIFICATION_OBJECTIVES}, **{m: "affect" for m in AFFECT_OBJECTIVES}}


def check_objective(objective: str, outputs: Sequence[str] = ("expression", "affect")) -> None:
    """trainer.objective must be <split>_<metric> of what evaluation reports for a model with
    these `outputs` (the head's); checked before training."""
    split, _, name = objective.partition("_")
    if split not in OBJECTIVE_SPLITS or _OUTPUT_OF.get(name) not in outputs:
        choices = [f"{s}_{m}" for s in OBJECTIVE_SPLITS for m in OBJECTIVE_METRICS if _OUTPUT_OF[m] in outputs]
        raise ConfigError(f"trainer.objective: {objective!r} is never reported by a model predicting "
                          f"{list(outputs)}; choose from {choices}")


def objective_metric(objective: str) -> str:
    """The MLflow metric that holds `objective`: "val_accuracy" -> "best_val/accuracy" (the kept
    model's evaluation; the per-epoch val/accuracy is Keras' own), "test_macro_f1" -> "test/macro_f1",
    "val_ccc_valence" -> "best_val/ccc_valence"."""
    check_objective(objective)
    split, _, name = objective.partition("_")
    return tracking.evaluation_metric_name(split, name)


def objective_value(objective: str, metrics_by_split: dict[str, dict]) -> float:
    """The value of `objective` ("val_accuracy", "test_macro_f1", ...) among the evaluated splits."""
    check_objective(objective)
    split, _, name = objective.partition("_")
    if split not in metrics_by_split:
        raise ConfigError(f"trainer.objective: {objective!r}: the cache has no {split} split")
    if name not in metrics_by_split[split]:
        raise ConfigError(f"trainer.objective: {objective!r}: no {split} face of the cache has it annotated")
    return metrics_by_split[split][name]
