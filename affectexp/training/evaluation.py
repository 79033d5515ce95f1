"""Evaluating a model on a split of a cache, logged to MLflow: its class probabilities with
classes matched by name, its valence and arousal over the annotated faces.

Used after training (tasks/train.py) and standalone on any saved model and any cache
(tasks/evaluate.py), e.g. a model trained on AffectNet's 8 classes evaluated on a 5-class cache.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import keras
import numpy as np

from affectexp import tracking
from affectexp.data.affectnet_layout import NOT_ANNOTATED
from affectexp.data.cache import FaceCache
from affectexp.errors import UserInputError
from affectexp.models.layers import head_predictions
from affectexp.training.inputs import CacheBatches
from affectexp.training.metrics import AFFECT_DIMENSIONS, affect_metrics, classification_metrics
from affectexp.training.plots import plot_affect_scatter, plot_confusion_matrix

log = logging.getLogger(__name__)


class ClassMismatch(UserInputError):
    """A model and a cache with no class in common, or a model whose classes are unknown."""


@dataclass(frozen=True)
class ClassMatch:
    """How a model's output columns line up with a cache's labels, by class name.

    names: the classes metrics are reported for, the cache's (those the model knows) first.
    label_map: (cache classes,) int, cache label -> index into names; -1 for a class the model lacks.
    columns: (len(names),) int, the model's output column of each of names.
    """

    names: list[str]
    label_map: np.ndarray
    columns: np.ndarray

    def apply(self, labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cache labels (n,) int and model probabilities (n, model classes) -> (y_true, y_pred),
        both int64 indices into names, for the faces whose class the model knows."""
        mapped = self.label_map[labels]
        known = mapped >= 0
        return mapped[known], probabilities[known][:, self.columns].argmax(axis=1)


def match_classes(model_names: Sequence[str], cache_names: Sequence[str], restrict: bool = True) -> ClassMatch:
    """Line up a model's classes with a cache's by name.

    restrict: predict only among the classes both have (the usual cross-data-set protocol);
    otherwise the model's other classes stay possible predictions (always wrong) and are
    reported with support 0.
    """
    shared = [name for name in cache_names if name in model_names]
    if not shared:
        raise ClassMismatch(f"the model predicts {list(model_names)} and the cache holds {list(cache_names)}: "
                            "no class in common")
    names = shared if restrict else shared + [name for name in model_names if name not in shared]
    label_map = np.array([names.index(name) if name in shared else -1 for name in cache_names], dtype=np.int64)
    columns = np.array([list(model_names).index(name) for name in names], dtype=np.int64)
    return ClassMatch(names, label_map, columns)


def model_classes(model: keras.Model, model_names: Sequence[str] | None, cache_names: Sequence[str]) -> list[str]:
    """The class names of the model's outputs; a model that does not say (a bare .keras file)
    is taken to predict the cache's classes in the cache's order, if it has as many."""
    if model_names is not None:
        return list(model_names)
    outputs = model.output
    width = (outputs["expression"] if isinstance(outputs, dict) else outputs).shape[-1]
    if width != len(cache_names):
        raise ClassMismatch(f"the model carries no class names and has {width} outputs, "
                            f"but the cache holds {len(cache_names)} classes {list(cache_names)}")
    return list(cache_names)


def predict_split(model: keras.Model, cache: FaceCache, split: str, batch_size: int,
                  ram_budget_bytes: int = 2 << 30) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """(true labels (n,) int64, the model's predictions by output (head_predictions)) for one
    split of a cache, read into memory when it fits in `ram_budget_bytes` (trainer.ram_budget_mb),
    else streamed."""
    batches = CacheBatches(cache, split, batch_size, shuffle=False, seed=0, ram_budget_bytes=ram_budget_bytes)
    try:
        return batches.labels, head_predictions(model, model.predict(batches, verbose=0))
    finally:
        batches.close()


def log_evaluation(metrics: dict, split: str, affect: tuple[np.ndarray, np.ndarray] | None = None) -> None:
    """Scalars as <split's prefix>/accuracy, .../f1/<class>, .../ccc_valence
    (tracking.evaluation_metric_name), and the full metrics (JSON), the confusion matrix (PNG) and,
    given `affect` ((n, 2) true and predicted valence and arousal), their scatter plot (PNG) as
    <prefix>_* artifacts."""
    scalars = {tracking.evaluation_metric_name(split, k): v for k, v in metrics.items() if isinstance(v, float)}
    scalars.update({tracking.evaluation_metric_name(split, f"f1/{name}"): m["f1"]
                    for name, m in metrics.get("per_class", {}).items()})
    tracking.log_metrics_once(scalars)  # a rerun after a kill repeats the evaluation, not its record
    prefix = tracking.EVALUATION_PREFIX.get(split, split)
    with tracking.artifact_dir() as folder:
        (folder / f"{prefix}_metrics.json").write_text(json.dumps(metrics, indent=2))
        if "confusion_matrix" in metrics:
            plot_confusion_matrix(np.array(metrics["confusion_matrix"]), metrics["class_names"],
                                  folder / f"{prefix}_confusion_matrix.png")
        if affect is not None:
            plot_affect_scatter(*affect, NOT_ANNOTATED, metrics, folder / f"{prefix}_affect_scatter.png")


def evaluate_and_log(model: keras.Model, model_names: Sequence[str] | None, cache: FaceCache, split: str,
                     batch_size: int, restrict_to_cache_classes: bool = True, ram_budget_bytes: int = 2 << 30) -> dict:
    """Evaluate `model` on `split` of `cache`, log it (log_evaluation names the metrics) and
    return the metrics. The split is streamed when it is larger than `ram_budget_bytes`.

    Class probabilities (a model whose outputs are the classes `model_names`, None: see
    model_classes) are matched to the cache's classes by name: classification_metrics with
    "evaluated_faces" and "skipped_faces" added. Valence and arousal are compared with the cache's
    over the faces annotated in each (affect_metrics: rmse_valence, ccc_arousal, ...).
    """
    class_names = cache.class_names
    labels, predicted = predict_split(model, cache, split, batch_size, ram_budget_bytes)
    metrics: dict = {}
    if "expression" in predicted:
        match = match_classes(model_classes(model, model_names, class_names), class_names, restrict_to_cache_classes)
        y_true, y_pred = match.apply(labels, predicted["expression"])
        metrics = classification_metrics(y_true, y_pred, match.names)
        metrics["evaluated_faces"], metrics["skipped_faces"] = len(y_true), len(labels) - len(y_true)
        if metrics["skipped_faces"]:
            log.warning("%d %s faces are of classes the model does not know: left out", metrics["skipped_faces"],
                        split)
    affect = None
    if "affect" in predicted:
        affect = cache.affect(split), predicted["affect"]
        metrics.update(affect_metrics(*affect, NOT_ANNOTATED))
    log_evaluation(metrics, split, affect)
    return metrics


def describe(metrics: dict) -> str:
    """An evaluation's headline numbers in words, for the log: accuracy, balanced accuracy and
    macro-F1; CCC and RMSE of valence and arousal; whichever the model reports."""
    parts = []
    if "accuracy" in metrics:
        parts.append(f"accuracy {metrics['accuracy']:.4f}, balanced accuracy {metrics['balanced_accuracy']:.4f}, "
                     f"macro-F1 {metrics['macro_f1']:.4f}")
    for dimension in AFFECT_DIMENSIONS:
        if f"ccc_{dimension}" in metrics:
            parts.append(f"{dimension} CCC {metrics[f'ccc_{dimension}']:.4f}, RMSE {metrics[f'rmse_{dimension}']:.4f}")
    return "; ".join(parts)


def check_face_shape(model: keras.Model, face_shape: tuple[int, int, int], cache_path: str) -> None:
    """The model's input (H, W, C) must be the cache's face shape."""
    expected = tuple(model.input_shape[1:])
    if expected != tuple(face_shape):
        raise UserInputError(f"{cache_path}: faces are {face_shape} but the model takes {expected}; evaluate on a "
                             f"cache built with cache.size={expected[0]} cache.color={'gray' if expected[2] == 1 else 'rgb'}")
