"""One training run: cache -> model -> fit -> test evaluation, everything recorded in MLflow."""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from pathlib import Path

import keras
import mlflow
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import affectexp.models.layers  # noqa: F401  (registers the custom layers for loading models)
from affectexp import tracking
from affectexp.data.cache import CacheError, FaceCache
from affectexp.errors import ConfigError
from affectexp.training.inputs import CacheBatches, class_weights
from affectexp.training.metrics import classification_metrics
from affectexp.training.optimizers import build_optimizer
from affectexp.training.plots import plot_confusion_matrix, plot_history

log = logging.getLogger(__name__)

BALANCE_MODES = ("none", "class_weight")


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class StopOnNaN(keras.callbacks.Callback):
    """Keras' TerminateOnNaN only stops quietly; a diverged run must end FAILED, with a reason."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            raise TrainingDiverged(f"training loss became {float(loss)} at batch {batch}; "
                                   "lower optimizer.lr or check the data")


class MlflowEpochMetrics(keras.callbacks.Callback):
    """Logs every epoch's metrics (and the learning rate) to the active MLflow run."""

    def on_epoch_end(self, epoch, logs=None):
        metrics = {k: float(v) for k, v in (logs or {}).items()}
        metrics["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        mlflow.log_metrics(metrics, step=epoch + 1)


def config_fingerprint(cfg: DictConfig) -> str:
    """Identity of a run for resuming: everything but where and how it is logged."""
    container = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    for volatile in ("logger", "paths"):
        container.pop(volatile, None)
    return hashlib.sha256(json.dumps(container, sort_keys=True).encode()).hexdigest()[:16]


def preprocess_command(cfg: DictConfig) -> str:
    """The preprocess.py command that builds the cache this config asks for."""
    parts = [f"dataset={cfg.dataset.name}"]
    if "root" in cfg.dataset and cfg.dataset.name != "synthetic":
        parts.append(f"dataset.root={cfg.dataset.root}")
    parts += [f"classes={cfg.classes.name}", f"cache.size={cfg.cache.size}", f"cache.color={cfg.cache.color}",
              f"cache.path={cfg.cache.path}"]
    return "python preprocess.py " + " ".join(parts)


def open_checked_cache(cfg: DictConfig) -> FaceCache:
    """The configured cache, after checking that it exists and holds the configured classes."""
    path = Path(cfg.cache.path)
    if not path.is_file():
        raise CacheError(f"cache.path: {path} does not exist; build it with: {preprocess_command(cfg)}")
    cache = FaceCache(path)
    if list(cache.class_names) != list(cfg.classes.names):
        cache.close()
        raise CacheError(f"{path}: the cache holds classes {cache.class_names} but classes={cfg.classes.name} "
                         f"asks for {list(cfg.classes.names)}; choose the matching classes or another cache.path")
    if cache.split_size("train") == 0:
        cache.close()
        raise CacheError(f"{path}: the cache has no training faces")
    return cache


def train(cfg: DictConfig) -> float:
    """Train, evaluate on the test split and log everything; returns cfg.trainer.objective's value.

    Rerunning the same config after an interruption resumes from the last finished epoch
    and continues the same MLflow run.
    """
    if cfg.trainer.balance not in BALANCE_MODES:
        raise ValueError(f"trainer.balance: unknown mode {cfg.trainer.balance!r}; choose from {list(BALANCE_MODES)}")
    check_objective(cfg.trainer.objective)
    with open_checked_cache(cfg) as cache:
        face_shape, class_names = cache.face_shape, list(cache.class_names)
        evaluated = [split for split in OBJECTIVE_SPLITS if cache.split_size(split) > 0]
    work_dir = Path(cfg.paths.runs_dir) / config_fingerprint(cfg)
    experiment_id = tracking.configure_logger(cfg.logger)
    with tracking.tracked_run(experiment_id, cfg.logger.run_name, work_dir) as run:
        tracking.log_params(tracking.flatten_params(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)))
        keras.utils.set_random_seed(cfg.trainer.seed)
        model, history, seconds = fit(cfg, face_shape, class_names, work_dir)
        metrics = {split: evaluate_and_log(model, cfg.cache.path, split, class_names, cfg.trainer.batch_size)
                   for split in evaluated}
        mlflow.log_metric("train_seconds", seconds)
        log_run_artifacts(cfg, model, history)
        test = metrics.get("test", {})
        log.info("Test accuracy %.4f, balanced accuracy %.4f, macro-F1 %.4f (MLflow run %s)",
                 test.get("accuracy", float("nan")), test.get("balanced_accuracy", float("nan")),
                 test.get("macro_f1", float("nan")), run.info.run_id)
    log.info("Open the MLflow UI with: %s", tracking.ui_command(mlflow.get_tracking_uri()))
    shutil.rmtree(work_dir / "backup", ignore_errors=True)
    return objective_value(cfg.trainer.objective, metrics)


OBJECTIVE_SPLITS = ("val", "test")
OBJECTIVE_METRICS = ("accuracy", "balanced_accuracy", "macro_f1")


def check_objective(objective: str) -> None:
    """trainer.objective must be <split>_<metric> of what evaluation reports; checked before training."""
    split, _, name = objective.partition("_")
    if split not in OBJECTIVE_SPLITS or name not in OBJECTIVE_METRICS:
        choices = [f"{s}_{m}" for s in OBJECTIVE_SPLITS for m in OBJECTIVE_METRICS]
        raise ConfigError(f"trainer.objective: {objective!r} is never reported; choose from {choices}")


def objective_value(objective: str, metrics_by_split: dict[str, dict]) -> float:
    """The value of `objective` ("val_accuracy", "test_macro_f1", ...) among the evaluated splits."""
    check_objective(objective)
    split, _, name = objective.partition("_")
    if split not in metrics_by_split:
        raise ConfigError(f"trainer.objective: {objective!r}: the cache has no {split} split")
    return metrics_by_split[split][name]


def make_batches(cfg: DictConfig) -> tuple[CacheBatches, CacheBatches]:
    """(train batches, shuffled and augmented; validation batches) streamed from cfg.cache.path."""
    trainer = cfg.trainer
    budget = trainer.ram_budget_mb << 20
    transform = cfg.augmentation.transform
    augmentation = OmegaConf.to_container(transform, resolve=True) if transform else None
    train_batches = CacheBatches(cfg.cache.path, "train", trainer.batch_size, shuffle=True, seed=trainer.seed,
                                 augmentation=augmentation, ram_budget_bytes=budget, steps=trainer.steps_per_epoch,
                                 workers=2)
    val_batches = CacheBatches(cfg.cache.path, "val", trainer.batch_size, shuffle=False, seed=trainer.seed,
                               ram_budget_bytes=budget)
    return train_batches, val_batches


def build_model(cfg: DictConfig, face_shape, num_classes: int, steps_per_epoch: int) -> keras.Model:
    """The configured model (cfg.model's `_target_` builder), compiled with the configured optimizer."""
    model = instantiate(cfg.model, input_shape=face_shape, num_classes=num_classes, _convert_="all")
    model.compile(
        optimizer=build_optimizer(cfg.optimizer, steps_per_epoch, cfg.trainer.epochs),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def fit(cfg: DictConfig, face_shape, class_names, work_dir: Path):
    """Build and fit the model; returns (best model by validation, history dict, seconds)."""
    trainer = cfg.trainer
    train_batches, val_batches = make_batches(cfg)
    model = build_model(cfg, face_shape, len(class_names), len(train_batches))
    mlflow.log_param("model.parameters", model.count_params())
    has_val = val_batches.size > 0
    monitor = trainer.monitor if has_val else trainer.monitor.removeprefix("val_")
    best_path = work_dir / "best.keras"
    callbacks = [
        StopOnNaN(),
        keras.callbacks.BackupAndRestore(str(work_dir / "backup")),
        keras.callbacks.ModelCheckpoint(str(best_path), monitor=monitor, mode="auto", save_best_only=True),
        keras.callbacks.ModelCheckpoint(str(work_dir / "last.keras")),
        MlflowEpochMetrics(),
    ]
    if trainer.early_stopping_patience > 0:
        callbacks.append(keras.callbacks.EarlyStopping(monitor=monitor, patience=trainer.early_stopping_patience))
    weights = class_weights(train_batches.labels, len(class_names)) if trainer.balance == "class_weight" else None
    started = time.perf_counter()
    try:
        history = model.fit(train_batches, validation_data=val_batches if has_val else None, epochs=trainer.epochs,
                            class_weight=weights, callbacks=callbacks, verbose=2)
    finally:
        train_batches.close()
        val_batches.close()
    seconds = time.perf_counter() - started
    if best_path.exists():
        model = keras.models.load_model(best_path)
    return model, history.history, seconds


def predict_split(model: keras.Model, cache_path: str, split: str, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(true labels, predicted probabilities (n, k)) for one split of a cache."""
    batches = CacheBatches(cache_path, split, batch_size, shuffle=False, seed=0)
    try:
        probabilities = model.predict(batches, verbose=0)
        return batches.labels, probabilities
    finally:
        batches.close()


# Keras already logs the per-epoch "val_*" metrics: the kept model's evaluation on the
# validation split is "best_val_*", so the two never mix in one metric history.
EVALUATION_PREFIX = {"val": "best_val", "test": "test"}


def evaluate_and_log(model: keras.Model, cache_path: str, split: str, class_names, batch_size: int) -> dict:
    """Metrics of `split` logged as <prefix>_accuracy, ... (EVALUATION_PREFIX), plus confusion
    matrix PNG and JSON."""
    y_true, probabilities = predict_split(model, cache_path, split, batch_size)
    metrics = classification_metrics(y_true, probabilities.argmax(axis=1), class_names)
    prefix = EVALUATION_PREFIX.get(split, split)
    scalars = {f"{prefix}_{k}": v for k, v in metrics.items() if isinstance(v, float)}
    scalars.update({f"{prefix}_f1_{name}": m["f1"] for name, m in metrics["per_class"].items()})
    mlflow.log_metrics(scalars)
    with tracking.artifact_dir() as folder:
        (folder / f"{prefix}_metrics.json").write_text(json.dumps(metrics, indent=2))
        plot_confusion_matrix(np.array(metrics["confusion_matrix"]), class_names, folder / f"{prefix}_confusion_matrix.png")
    return metrics


def log_run_artifacts(cfg: DictConfig, model: keras.Model, history: dict) -> None:
    """The resolved config, the trained model (.keras) and the training curves."""
    with tracking.artifact_dir() as folder:
        (folder / "config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
        model.save(folder / "model.keras")
        plot_history(history, folder / "training_curves.png")
