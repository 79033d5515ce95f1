"""Figures logged with a run: confusion matrix, valence and arousal scatter, training curves,
augmented samples."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def plot_confusion_matrix(matrix: np.ndarray, class_names: Sequence[str], path: Path) -> Path:
    """Row-normalised confusion matrix with counts, saved as PNG."""
    matrix = np.asarray(matrix)
    normalised = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    size = 1.2 + 0.7 * len(class_names)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (row, col), count in np.ndenumerate(matrix):
        ax.text(col, row, str(count), ha="center", va="center",
                color="white" if normalised[row, col] > 0.5 else "black", fontsize=8)
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_history(history: dict[str, list[float]], path: Path) -> Path:
    """Loss and accuracy (when the model reports it: not for valence and arousal alone) per epoch,
    train vs validation, saved as PNG."""
    metrics = ("loss", "accuracy") if "accuracy" in history else ("loss",)
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for prefix in ("", "val_"):
            values = history.get(prefix + metric)
            if values:
                ax.plot(range(1, len(values) + 1), values, marker="o", label=prefix + metric)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_augmented_grid(faces: np.ndarray, variants: np.ndarray, title: str, path: Path) -> Path:
    """One row per face: the face as stored, then its augmented variants; saved as PNG.

    faces: (n, H, W, C) uint8; variants: (n, v, H, W, C) uint8.
    """
    rows, columns = variants.shape[0], variants.shape[1] + 1
    fig, axes = plt.subplots(rows, columns, figsize=(1.2 * columns, 1.2 * rows + 0.4), squeeze=False)
    for row in range(rows):
        for column, image in enumerate([faces[row], *variants[row]]):
            ax = axes[row, column]
            ax.imshow(image.squeeze(-1) if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
    axes[0, 0].set_title("stored", fontsize=8)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_affect_scatter(y_true: np.ndarray, y_pred: np.ndarray, not_annotated: float, metrics: dict,
                        path: Path) -> Path:
    """Predicted against true valence and arousal, one panel each, over the values annotated in
    that dimension (those not `not_annotated`), with the identity line and the panel's CCC and RMSE
    (metrics: affect_metrics' keys); saved as PNG. y_true, y_pred: (n, 2) float (valence, arousal)."""
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.4))
    for column, (ax, dimension) in enumerate(zip(axes, ("valence", "arousal"))):
        annotated = y_true[:, column] != not_annotated
        ax.scatter(y_true[annotated, column], y_pred[annotated, column], s=6, alpha=0.4, linewidths=0)
        ax.plot([-1, 1], [-1, 1], color="grey", linewidth=1, linestyle="--")
        ax.set_xlim(-1.05, 1.05)
        ax.set_ylim(-1.05, 1.05)
        ax.set_aspect("equal")
        ax.set_xlabel(f"true {dimension}")
        ax.set_ylabel(f"predicted {dimension}")
        if f"ccc_{dimension}" in metrics:
            ax.set_title(f"{dimension}: CCC {metrics[f'ccc_{dimension}']:.3f}, RMSE {metrics[f'rmse_{dimension}']:.3f} "
                         f"(n={int(annotated.sum())})", fontsize=9)
        else:
            ax.set_title(f"{dimension}: not annotated", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
