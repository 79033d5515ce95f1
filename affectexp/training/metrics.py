"""Classification metrics from labels and predictions (NumPy only)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(k, k) int64 counts: rows are true classes, columns predicted classes."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return matrix


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, class_names: Sequence[str]) -> dict:
    """accuracy, balanced_accuracy, macro_f1, per-class precision/recall/f1/support, confusion.

    A class absent from y_true counts 0 towards recall and is left out of the balanced
    accuracy and macro-F1 averages (they average over the classes that occur).
    """
    matrix = confusion_matrix(y_true, y_pred, len(class_names))
    true_positive = np.diag(matrix).astype(np.float64)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, true_positive / predicted, 0.0)
        recall = np.where(support > 0, true_positive / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0
    return {
        "accuracy": float(true_positive.sum() / max(matrix.sum(), 1)),
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            name: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                   "support": int(support[i])}
            for i, name in enumerate(class_names)
        },
        "confusion_matrix": matrix.tolist(),
        "class_names": list(class_names),
    }


# AffectNet's paper reports valence and arousal by these four (Mollahosseini et al. 2017, table 9).
AFFECT_METRICS = ("rmse", "pearson", "sagr", "ccc")
AFFECT_DIMENSIONS = ("valence", "arousal")


def rmse(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Root mean squared error."""
    return float(np.sqrt(np.mean((y_pred - y_true) ** 2)))


def pearson(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Pearson's correlation; 0 when either side is constant (no linear relation to measure)."""
    t, p = y_true - y_true.mean(), y_pred - y_pred.mean()
    denominator = np.sqrt((t ** 2).sum() * (p ** 2).sum())
    return float((t * p).sum() / denominator) if denominator > 0 else 0.0


def sagr(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Sign agreement: the share of values whose prediction has the true value's sign."""
    return float(np.mean(np.sign(y_true) == np.sign(y_pred)))


def ccc(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Lin's concordance correlation: 2 cov / (var_t + var_p + (mean_t - mean_p)^2), population
    moments; 1 only for predictions equal to the truth, 0 for a constant prediction."""
    covariance = np.mean((y_true - y_true.mean()) * (y_pred - y_pred.mean()))
    denominator = y_true.var() + y_pred.var() + (y_true.mean() - y_pred.mean()) ** 2
    return float(2 * covariance / denominator) if denominator > 0 else 0.0


def affect_metrics(y_true: np.ndarray, y_pred: np.ndarray, not_annotated: float) -> dict:
    """rmse_valence, pearson_valence, sagr_valence, ccc_valence and the same for arousal, of
    (n, 2) float (valence, arousal) targets and predictions, each over the rows annotated in
    that dimension (those not `not_annotated`); "annotated_valence"/"annotated_arousal" count them.
    A dimension without annotated rows is left out."""
    functions = {"rmse": rmse, "pearson": pearson, "sagr": sagr, "ccc": ccc}
    metrics: dict = {}
    for column, dimension in enumerate(AFFECT_DIMENSIONS):
        annotated = y_true[:, column] != not_annotated
        metrics[f"annotated_{dimension}"] = int(annotated.sum())
        if annotated.any():
            t, p = y_true[annotated, column].astype(np.float64), y_pred[annotated, column].astype(np.float64)
            metrics.update({f"{name}_{dimension}": functions[name](t, p) for name in AFFECT_METRICS})
    return metrics
