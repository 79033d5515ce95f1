"""Training state committed once per epoch, so that a killed run resumes as if never killed.

An epoch is committed as one step: the model's weights and optimizer state (a weights
file per epoch), the states of its random generators (dropout), the best epoch so far,
early stopping's count, the data position (the epoch number, which seeds the order,
balancing and augmentation of the next epoch), the epoch's metrics and the training time,
all made durable by one atomic rename of state.json. Only after that rename are the
metrics sent to MLflow. A kill before it replays the whole epoch; a kill after it, before
the metrics arrived, is repaired on the rerun, which sends each committed epoch the run
lacks (tracking.log_missing_epochs). Either way every epoch is logged exactly once.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import keras

from affectexp import tracking
from affectexp.errors import ConfigError
from affectexp.processes import stop_point

STATE_FILE = "state.json"


def weights_file(epoch: int) -> str:
    """The weights file of a committed epoch (1-based), inside the run's folder."""
    return f"epoch-{epoch:04d}.weights.h5"


def monitor_improves(monitor: str):
    """(new, best) -> bool for trainer.monitor, as Keras' "auto" mode reads a metric's name:
    accuracies and F1 scores are better higher, everything else (losses) lower."""
    if "acc" in monitor or "f1" in monitor:
        return lambda new, best: new > best
    return lambda new, best: new < best


@dataclass
class TrainingState:
    """What the run's folder says about training so far; see the module docstring."""

    run_id: str
    epochs_done: int = 0
    finished: bool = False  # fit is over (every epoch trained, or early stopping): nothing left to train
    history: list[dict[str, float]] = field(default_factory=list)  # each committed epoch's metrics
    best_epoch: int = 0
    best_value: float | None = None
    wait: int = 0  # epochs since the best one (early stopping)
    seed_states: list[list[int]] = field(default_factory=list)  # the model's seed generators, after the last epoch
    train_seconds: float = 0.0  # over every attempt

    @classmethod
    def load(cls, work_dir: Path, run_id: str) -> TrainingState:
        """The committed state of `run_id` in work_dir, or a fresh one (nothing committed, or
        the folder holds another run's state: that run is not continued)."""
        path = Path(work_dir) / STATE_FILE
        if path.is_file():
            state = cls(**json.loads(path.read_text()))
            if state.run_id == run_id:
                return state
        return cls(run_id=run_id)

    def save(self, work_dir: Path) -> None:
        """Write state.json atomically: a reader sees the old state or the new one, never a part."""
        path = Path(work_dir) / STATE_FILE
        partial = path.with_suffix(".json.partial")
        with open(partial, "w") as handle:
            json.dump(asdict(self), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power cut
        finally:
            os.close(directory)

    def history_dict(self) -> dict[str, list[float]]:
        """The committed epochs as Keras' History.history: {metric: [value per epoch]}."""
        names = {name for epoch in self.history for name in epoch}
        return {name: [epoch.get(name, float("nan")) for epoch in self.history] for name in sorted(names)}


def seed_generator_states(model: keras.Model) -> list:
    """The model's seed generator variables (dropout's): state that Keras' weights files leave out."""
    weights = {id(variable) for variable in model.weights}
    return [variable for variable in model.variables if id(variable) not in weights]


def restore(model: keras.Model, work_dir: Path, state: TrainingState, which: str = "last") -> None:
    """Load the committed weights (with optimizer state and seed generators) of the last
    epoch, or of the best one (which="best"), into a model built and compiled as before."""
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    epoch = state.epochs_done if which == "last" else state.best_epoch
    model.load_weights(Path(work_dir) / weights_file(epoch))
    if which == "last":
        for variable, value in zip(seed_generator_states(model), state.seed_states):
            variable.assign(value)


class EpochCommit(keras.callbacks.Callback):
    """Commits each epoch (see the module docstring), keeps the best epoch by `monitor`, and
    stops training after `patience` epochs without improvement (0: never).

    Both the best-so-far and early stopping's count live in the committed state, so a
    resumed run keeps the best epoch of the attempt that was killed.
    """

    def __init__(self, state: TrainingState, work_dir: Path, monitor: str, patience: int, epochs: int):
        super().__init__()
        self.state, self.work_dir, self.monitor = state, Path(work_dir), monitor
        self.patience, self.epochs = patience, epochs
        self.improves = monitor_improves(monitor)
        self._last = time.perf_counter()
        self._epoch = 0

    def on_train_begin(self, logs=None):
        self._last = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch + 1

    def on_train_batch_end(self, batch, logs=None):
        stop_point(f"batch:{self._epoch}:{batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        number = epoch + 1
        metrics = {name: float(value) for name, value in (logs or {}).items()}
        metrics["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        if self.monitor not in metrics:
            raise ConfigError(f"trainer.monitor: {self.monitor!r} is not reported; choose from {sorted(metrics)}")
        state = self.state
        value = metrics[self.monitor]
        if state.best_value is None or self.improves(value, state.best_value):
            state.best_epoch, state.best_value, state.wait = number, value, 0
        else:
            state.wait += 1
        stop = self.patience > 0 and state.wait >= self.patience
        self.model.save_weights(self.work_dir / weights_file(number))
        now = time.perf_counter()
        state.train_seconds += now - self._last
        self._last = now
        state.epochs_done, state.finished = number, stop or number >= self.epochs
        state.history.append(metrics)
        state.seed_states = [keras.ops.convert_to_numpy(v).tolist() for v in seed_generator_states(self.model)]
        state.save(self.work_dir)
        stop_point(f"epoch_committed:{number}")
        tracking.log_epoch_metrics(metrics, number)
        self._remove_stale_weights()
        if stop:
            self.model.stop_training = True

    def _remove_stale_weights(self) -> None:
        """Keep the last and the best epoch's weights; any other is no longer needed."""
        keep = {weights_file(self.state.epochs_done), weights_file(self.state.best_epoch)}
        for path in self.work_dir.glob("epoch-*.weights.h5"):
            if path.name not in keep:
                path.unlink(missing_ok=True)
