"""train.py's task: one training run, cache -> model -> fit -> evaluation, recorded in MLflow.

The same run whoever starts it: train.py alone (run), a job of a Hydra sweep (run, finding
its sweep's parent) or a trial of a KerasTuner search (search.py calls train_and_evaluate).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import keras
import mlflow
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from affectexp import locks, tracking
from affectexp.config import AugmentOn, HeadConfig, LoggerConfig, TrainConfig, TrainerConfig, check_values
from affectexp.data.cache import FaceCache
from affectexp.errors import ConfigError
from affectexp.inference.model import FaceModel, copy_model_files, log_face_model, logged_model_uri, register_run_model
from affectexp.models import BUILDER_ARGUMENTS
from affectexp.models.layers import HEAD_OUTPUTS
from affectexp.processes import stop_point
from affectexp.targets import check_target_config
from affectexp.tasks.names import model_name, run_name
from affectexp.tasks.sweep import current_sweep_job
from affectexp.training import runtime
from affectexp.training.augment import FaceAugmenter, augmented_variants, check_transform, default_augment_workers
from affectexp.training.caches import open_checked_cache
from affectexp.training.commit import EpochCommit, TrainingState, restore
from affectexp.training.device_augment import check_device_transform, device_variants, face_model, \
    with_device_augmentation
from affectexp.training.evaluation import describe, evaluate_and_log
from affectexp.training.inputs import CacheBatches, FollowEpochs, class_weights
from affectexp.training.objectives import OBJECTIVE_METRICS, OBJECTIVE_SPLITS, check_objective, objective_metric, \
    objective_value
from affectexp.training.losses import affect_loss, classification_loss
from affectexp.training.optimizers import build_optimizer, check_optimizer_config
from affectexp.training.plots import plot_augmented_grid, plot_history

log = logging.getLogger(__name__)

# Faces and augmented variants of each shown in the augmentation_samples.png artifact.
SAMPLE_FACES, SAMPLE_VARIANTS = 8, 7


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


class StopOnNaN(keras.callbacks.Callback):
    """Keras' TerminateOnNaN only stops quietly; a diverged run must end FAILED, with a reason."""

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            raise TrainingDiverged(f"training loss became {float(loss)} at batch {batch}; "
                                   "lower optimizer.lr or check the data")


def config_fingerprint(cfg: DictConfig) -> str:
    """Identity of a run for resuming: everything but where and how it is logged (a run's
    name, given on the command line, does count: another name is another run)."""
    return fingerprint_of(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))


def fingerprint_of(resolved: dict) -> str:
    """config_fingerprint of a resolved config (OmegaConf.to_container)."""
    container = json.loads(json.dumps(resolved))  # a deep copy: keys are popped below
    run_name = container.pop("logger", {}).get("run_name")
    container.pop("paths", None)
    for where in ("model_dir", "report_dir"):  # where copies go, not what is trained
        container.pop(where, None)
    container["cache"].pop("chunk_rows", None)  # training reads the cache's own chunking from the file
    if run_name is not None:
        container["run_name"] = run_name
    return hashlib.sha256(json.dumps(container, sort_keys=True).encode()).hexdigest()[:16]


def read_config(cfg: DictConfig) -> tuple[TrainConfig, dict]:
    """The config read once, after its mandatory values and ranges are checked (check_values):
    typed (what the run's code is handed) and resolved (what is logged and identifies the run)."""
    check_values(cfg)
    return OmegaConf.to_object(cfg), OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def check_config(settings: TrainConfig) -> None:
    """What the typed schemas cannot check, checked before anything is trained or logged:
    the model's keys and types against its builder, the optimizer and its schedule (built once),
    the objective, and the augmentation (built once). (Value ranges and mandatory values left
    out: read_config.)"""
    check_target_config("model", settings.model, BUILDER_ARGUMENTS)
    check_optimizer_config(settings.optimizer, settings.trainer.epochs)
    check_head(settings.head)
    check_objective(settings.trainer.objective, settings.head.outputs)
    check_monitor(settings.trainer.monitor, settings.head)
    if settings.trainer.augment_on == AugmentOn.device:
        check_device_transform(settings.augmentation.transform, settings.cache.size)
    else:
        check_transform(settings.augmentation.transform)
    augment_workers(settings.trainer)


def check_head(head: HeadConfig) -> None:
    """head.outputs must name each of HEAD_OUTPUTS at most once, and at least one."""
    outputs = list(head.outputs)
    if not outputs or len(set(outputs)) < len(outputs) or not set(outputs) <= set(HEAD_OUTPUTS):
        raise ConfigError(f"head.outputs: {outputs}; name one or more of {list(HEAD_OUTPUTS)}, each once "
                          "(or choose head=expression|affect|multitask)")


def check_monitor(monitor: str, head: HeadConfig) -> None:
    """trainer.monitor must be a per-epoch metric the head reports: a head without the
    expression output has losses only."""
    if "expression" not in head.outputs and "accuracy" in monitor:
        raise ConfigError(f"trainer.monitor: {monitor!r} is not reported by head={head.name}, which predicts "
                          "no expression; use trainer.monitor=val_loss")


def run(cfg: DictConfig, overrides: list[str]) -> float:
    """train.py without a tuner: one run named from its model and command-line `overrides`,
    or, in a Hydra multirun, a job logged as a child of its sweep's run; returns
    trainer.objective's value (what a sweeper optimises)."""
    model = model_name(cfg.model)
    parent = current_sweep_job(model)
    return train(cfg, parent, run_name(model, overrides) if parent is None else None)


def train(cfg: DictConfig, parent: tracking.Parent | None = None, name: str | None = None) -> float:
    """train_and_evaluate(cfg, parent, name), reduced to cfg.trainer.objective's value (for sweepers)."""
    return objective_value(cfg.trainer.objective, train_and_evaluate(cfg, parent, name))


def train_and_evaluate(cfg: DictConfig, parent: tracking.Parent | None = None,
                       name: str | None = None) -> dict[str, dict]:
    """One tracked training run: train, evaluate on the validation and test splits and log
    everything; returns the evaluation metrics by split ({"val": {...}, "test": {...}}).

    The same run whoever starts it: train.py alone, a job of a sweep or a trial of a search
    (their `parent`, which names its child). The run is named logger.run_name, else
    `name`, else by its parent. Rerunning the same config after an interruption continues the same
    MLflow run from its last committed epoch (see commit.py) and ends as if never
    interrupted; rerunning it after it finished trains nothing and returns the finished
    run's metrics. Only one process at a time trains a config: a second one stops at once
    (locks.LockHeld).
    """
    settings, resolved = read_config(cfg)
    check_config(settings)
    with open_checked_cache(settings) as cache:
        return train_on_cache(settings, resolved, cache, parent, name)


def train_on_cache(settings: TrainConfig, resolved: dict, cache: FaceCache, parent: tracking.Parent | None,
                   name: str | None) -> dict[str, dict]:
    """train_and_evaluate on the opened, checked `cache`; `resolved` is the config as logged."""
    trainer, logger = settings.trainer, settings.logger
    split_sizes = {split: cache.split_size(split) for split in ("train", *OBJECTIVE_SPLITS)}
    evaluated = [split for split in OBJECTIVE_SPLITS if split_sizes[split] > 0]
    work_dir = run_folder(Path(settings.paths.runs_dir), fingerprint_of(resolved), parent)
    experiment_id = tracking.configure_logger(logger)
    with locks.exclusive_lock(work_dir / "run", "paths.runs_dir"):
        finished = tracking.recorded_run(work_dir, parent.run_id if parent else None)
        if finished is not None and finished.info.status == "FINISHED":
            log.info("This config already trained as MLflow run %s (%s); nothing to do. To train it again, "
                     "delete %s", finished.info.run_id, finished.info.run_name, work_dir)
            if parent is None:  # registering is a logger setting: asking for it later registers the finished run's
                register_run_model(finished.info.run_id, logger.register_model, logger.register_alias)
            write_outputs(settings, finished.info.run_id)
            return logged_evaluation(finished.data.metrics, evaluated)
        with tracking.tracked_run(experiment_id, logger.run_name or name, work_dir, parent,
                                  system_metrics=logger.system_metrics, tags=tracking.job_tags(logger.job_name)) as run:
            tracking.log_config_params(resolved)
            tracking.log_cache_input(settings.cache.path, Path(settings.cache.path).stem, cache.fingerprint,
                                     split_sizes)
            log_augmentation_samples(cache, settings)
            state = TrainingState.load(work_dir, run.info.run_id)
            with runtime.reproducible(trainer.seed, trainer.deterministic):
                model = fit(settings, cache, work_dir, state)
            metrics = {}
            for split in evaluated:
                metrics[split] = evaluate_and_log(model, cache.class_names, cache, split, trainer.batch_size,
                                                  ram_budget_bytes=trainer.ram_budget_mb << 20)
                stop_point(f"evaluated:{split}")
            tracking.log_metrics_once({tracking.TRAIN_SECONDS: state.train_seconds})
            log_run_artifacts(resolved, logger, FaceModel(model, cache.class_names, cache.face_spec),
                              state.history_dict(), register=parent is None)
            if "test" in metrics:
                log.info("Test %s (MLflow run %s)", describe(metrics["test"]), run.info.run_id)
        write_outputs(settings, run.info.run_id)
    log.info("Open the MLflow UI with: %s", tracking.ui_command(mlflow.get_tracking_uri()))
    return metrics


def run_folder(runs_dir: Path, fingerprint: str, parent: tracking.Parent | None) -> Path:
    """Where a run of this config commits its epochs and records its MLflow run: runs/<config hash>
    for a run of its own; runs/children/<parent run id>/<config hash> for a sweep's job or a
    search's trial, so that the same config trained alone and under any parent are separate runs
    that never take over each other's checkpoints (a rerun continues or finds its own)."""
    return runs_dir / fingerprint if parent is None else runs_dir / "children" / parent.run_id / fingerprint


def write_outputs(settings: TrainConfig, run_id: str) -> None:
    """The finished run's model files into settings.model_dir and its metrics and plots into
    settings.report_dir, where they are set (a batch job's output folders)."""
    if settings.model_dir:
        copy_model_files(logged_model_uri(run_id), settings.model_dir)
    if settings.report_dir:
        tracking.copy_run_report(run_id, settings.report_dir)


def logged_evaluation(run_metrics: dict[str, float], splits) -> dict[str, dict]:
    """A finished run's evaluation metrics by split, read back from its logged metrics
    (named by tracking.evaluation_metric_name), in the form train_and_evaluate returns."""
    return {split: {name: run_metrics[objective_metric(f"{split}_{name}")] for name in OBJECTIVE_METRICS
                    if objective_metric(f"{split}_{name}") in run_metrics} for split in splits}


def augment_workers(trainer: TrainerConfig) -> int:
    """trainer.augment_workers as a count of processes (None: default_augment_workers())."""
    if trainer.augment_workers is None:
        return default_augment_workers()
    if trainer.augment_workers < 0:
        raise ConfigError(f"trainer.augment_workers: {trainer.augment_workers}; use a count of processes, "
                          "0 to augment in the reader threads, or null for one per core")
    return trainer.augment_workers


def make_batches(cache: FaceCache, trainer: TrainerConfig, augmentation: dict | None,
                 outputs: tuple[str, ...]) -> tuple[CacheBatches, CacheBatches]:
    """(train batches, shuffled, balanced and `augmentation`-ed on the host; validation batches)
    streamed from `cache`, with the targets of the model's `outputs`. With trainer.augment_on=device
    the train batches are the faces as stored (build_model's model augments them)."""
    budget = trainer.ram_budget_mb << 20
    weights = loss_class_weights(str(trainer.balance), cache.labels("train"), len(cache.class_names))
    on_host = trainer.augment_on == AugmentOn.host
    train_batches = CacheBatches(cache, "train", trainer.batch_size, shuffle=True, seed=trainer.seed,
                                 augmentation=augmentation if on_host else None, ram_budget_bytes=budget,
                                 steps=trainer.steps_per_epoch, workers=2, balance=str(trainer.balance),
                                 augment_workers=augment_workers(trainer) if on_host else 0, outputs=outputs,
                                 sample_weights=weights)
    val_batches = CacheBatches(cache, "val", trainer.batch_size, shuffle=False, seed=trainer.seed,
                               ram_budget_bytes=budget, outputs=outputs)
    return train_batches, val_batches


class PlainMetricNames(keras.callbacks.Callback):
    """A model of several outputs has Keras name its expression accuracy "expression_accuracy";
    renamed to "accuracy" (and val_...) before the other callbacks read the epoch's logs, so
    trainer.monitor, the MLflow names (train/accuracy, val/accuracy) and the committed history
    mean the same whatever the head."""

    def on_epoch_end(self, epoch, logs=None):
        for name in [name for name in (logs or {}) if "expression_accuracy" in name]:
            logs[name.replace("expression_accuracy", "accuracy")] = logs.pop(name)


def build_model(settings: TrainConfig, face_shape, num_classes: int, steps_per_epoch: int) -> keras.Model:
    """The configured model (settings.model's `_target_` builder) in trainer.precision, compiled
    with the configured optimizer and loss, XLA-compiled as trainer.jit_compile says: the model
    fit trains. With trainer.augment_on=device and an augmentation, that is the model behind the
    augmentation's layer (device_augment.face_model gives the model itself back).

    Call it inside the distribution strategy's scope (see fit) for the variables to be mirrored.
    """
    classes, trainer = settings.classes, settings.trainer
    if len(classes.names) != num_classes:
        raise ConfigError(f"classes={classes.name} names {len(classes.names)} classes, not {num_classes}")
    head = settings.head
    with runtime.dtype_policy(str(trainer.precision)):
        model = instantiate(settings.model, input_shape=tuple(face_shape), num_classes=num_classes,
                            outputs=tuple(head.outputs), _convert_="all")
        if trainer.augment_on == AugmentOn.device and settings.augmentation.transform:
            model = with_device_augmentation(model, settings.augmentation.transform, trainer.seed)
    losses = {"expression": classification_loss(num_classes, trainer.label_smoothing), "affect": affect_loss()}
    weights = {"expression": head.expression_weight, "affect": head.affect_weight}
    if len(head.outputs) == 1:
        output = head.outputs[0]
        loss, loss_weights, metrics = losses[output], None, ["accuracy"] if output == "expression" else None
    else:
        loss = {name: losses[name] for name in head.outputs}
        loss_weights = {name: weights[name] for name in head.outputs}
        metrics = {"expression": ["accuracy"]}
    model.compile(optimizer=build_optimizer(settings.optimizer, steps_per_epoch, trainer.epochs), loss=loss,
                  loss_weights=loss_weights, metrics=metrics,
                  jit_compile="auto" if trainer.jit_compile is None else trainer.jit_compile)
    return model


def loss_class_weights(balance: str, labels: np.ndarray, num_classes: int) -> dict[int, float] | None:
    """Per-class loss weights for trainer.balance "class_weight" (given to the batches as per-row
    weights), else None (oversample and truncate balance the batches themselves)."""
    return class_weights(labels, num_classes) if balance == "class_weight" else None


def fit(settings: TrainConfig, cache: FaceCache, work_dir: Path, state: TrainingState) -> keras.Model:
    """Build the model under trainer.strategy and fit it on `cache` from the committed `state` on
    (nothing is trained once state.finished); returns the model holding the best epoch's
    weights by trainer.monitor, also saved as work_dir/best.keras."""
    trainer, class_names = settings.trainer, cache.class_names
    train_batches, val_batches = make_batches(cache, trainer, settings.augmentation.transform,
                                              tuple(settings.head.outputs))
    with runtime.make_strategy(str(trainer.strategy)).scope():
        trained = build_model(settings, cache.face_shape, len(class_names), len(train_batches))
        if state.epochs_done:
            restore(trained, work_dir, state)
            log.info("Resuming after epoch %d of %d (best so far: epoch %d, %s %.4f)", state.epochs_done,
                     trainer.epochs, state.best_epoch, trainer.monitor, state.best_value)
    model = face_model(trained)  # what is evaluated, saved and logged: without an augmentation layer
    mlflow.log_param("model.parameters", model.count_params())
    tracking.log_missing_epochs(state.history)  # committed epochs whose metrics a kill kept from MLflow
    has_val = val_batches.size > 0
    monitor = trainer.monitor if has_val else trainer.monitor.removeprefix("val_")
    commit = EpochCommit(state, work_dir, monitor, trainer.early_stopping_patience, trainer.epochs)
    try:
        if not state.finished:
            callbacks = [FollowEpochs(train_batches), StopOnNaN(), PlainMetricNames(), commit]
            trained.fit(train_batches, validation_data=val_batches if has_val else None, epochs=trainer.epochs,
                        initial_epoch=state.epochs_done, callbacks=callbacks, verbose=2,
                        shuffle=False)  # CacheBatches orders each epoch itself, by seed and epoch number
    finally:
        train_batches.close()
        val_batches.close()
    restore(trained, work_dir, state, which="best")
    model.save(work_dir / "best.keras")
    return model


def log_augmentation_samples(cache: FaceCache, settings: TrainConfig) -> None:
    """augmentation_samples.png: a few training faces (first column) and augmented variants of each."""
    augmentation = settings.augmentation
    if augmentation.transform is None:
        return
    seed, on_device = settings.trainer.seed, settings.trainer.augment_on == AugmentOn.device
    rows = np.random.default_rng(seed).choice(cache.split_size("train"), SAMPLE_FACES, replace=False)
    faces = np.stack([cache.read_faces("train", int(row), int(row) + 1)[0] for row in np.sort(rows)])
    if on_device:
        variants = device_variants(augmentation.transform, seed, faces, SAMPLE_VARIANTS)
    else:
        variants = augmented_variants(FaceAugmenter(augmentation.transform, seed), faces, SAMPLE_VARIANTS)
    title = f"augmentation={augmentation.name}" + (" on the device" if on_device else "")
    with tracking.artifact_dir() as folder:
        plot_augmented_grid(faces, variants, title, folder / "augmentation_samples.png")


def log_run_artifacts(resolved: dict, logger: LoggerConfig, model: FaceModel, history: dict, register: bool) -> None:
    """The resolved config, the training curves and the trained model (an MLflow model,
    registered as logger.register_model with alias logger.register_alias when they are set
    and `register`). A run continued after a kill that had already logged its model does not log it again."""
    with tracking.artifact_dir() as folder:
        (folder / "config.yaml").write_text(OmegaConf.to_yaml(resolved))
        plot_history(history, folder / "training_curves.png")
    run_id = mlflow.active_run().info.run_id
    if logged_model_uri(run_id) is None:
        log_face_model(model)
    stop_point("model_logged")
    if register:  # else a sweep's or search's child: its parent registers the best child's model
        register_run_model(run_id, logger.register_model, logger.register_alias)
    stop_point("artifacts")
