"""The epoch commit's choice of the best epoch (trainer.monitor) and its early stopping
(trainer.early_stopping_patience), driven through a real `fit` whose monitored values are
scripted, so that which epoch is best, and when training stops, is known beforehand."""

from __future__ import annotations

import keras
import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from affectexp.errors import ConfigError
from affectexp.training.commit import EpochCommit, TrainingState, restore, weights_file


class ScriptedMetric(keras.callbacks.Callback):
    """Sets logs[name] to the epoch's scripted value before EpochCommit reads it (Keras hands
    every callback the same logs dict, in order), and keeps each epoch's weights."""

    def __init__(self, name: str, values: list[float]):
        super().__init__()
        self.name, self.values, self.weights = name, values, []

    def on_epoch_end(self, epoch, logs=None):
        logs[self.name] = self.values[epoch]
        self.weights.append([w.copy() for w in self.model.get_weights()])


def tiny_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def fit_scripted(tmp_path, monitor: str, values: list[float], patience: int, epochs: int, scripted: str = ""):
    """Train the tiny model with `values` as the `scripted` metric (default: the monitored one);
    returns (state, script, run id, model, work dir)."""
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 4)).astype("float32"), rng.integers(0, 3, 32)
    model = tiny_model()
    work_dir = tmp_path / "run"
    work_dir.mkdir()
    script = ScriptedMetric(scripted or monitor, values)
    with mlflow.start_run() as run:
        state = TrainingState(run_id=run.info.run_id)
        commit = EpochCommit(state, work_dir, monitor, patience, epochs)
        model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=[script, commit])
    return state, script, run.info.run_id, model, work_dir


@pytest.mark.parametrize(("monitor", "values", "best"), [
    ("val_accuracy", [0.5, 0.7, 0.6, 0.65, 0.4], 2),  # higher is better
    ("val_loss", [0.9, 0.8, 1.0, 0.5, 0.7], 4),  # lower is better
    ("val_f1", [0.1, 0.3, 0.3, 0.2, 0.1], 2),  # a tie is no improvement: the first stays best
])
def test_the_best_epoch_by_the_monitor_is_kept_not_the_last(tmp_path, monitor, values, best):
    state, script, _, model, work_dir = fit_scripted(tmp_path, monitor, values, patience=0, epochs=5)
    assert state.epochs_done == 5 and state.finished
    assert (state.best_epoch, state.best_value) == (best, values[best - 1])
    assert sorted(p.name for p in work_dir.glob("epoch-*")) == sorted({weights_file(best), weights_file(5)})
    restore(model, work_dir, state, which="best")
    for kept, expected in zip(model.get_weights(), script.weights[best - 1]):
        np.testing.assert_array_equal(kept, expected)
    assert any(not np.array_equal(a, b) for a, b in zip(script.weights[best - 1], script.weights[-1]))
    restore(model, work_dir, state, which="last")
    for kept, expected in zip(model.get_weights(), script.weights[-1]):
        np.testing.assert_array_equal(kept, expected)


def test_early_stopping_stops_after_patience_epochs_without_improvement(tmp_path):
    values = [0.5, 0.6, 0.55, 0.58, 0.9, 0.9, 0.9, 0.9]  # best at 2; epochs 3 and 4 do not improve
    state, _, run_id, _, _ = fit_scripted(tmp_path, "val_accuracy", values, patience=2, epochs=8)
    assert (state.epochs_done, state.best_epoch, state.wait, state.finished) == (4, 2, 2, True)
    history = MlflowClient().get_metric_history(run_id, "val/accuracy")
    assert [(m.step, m.value) for m in history] == [(e, v) for e, v in enumerate(values[:4], 1)]


def test_without_patience_training_runs_every_epoch(tmp_path):
    values = [0.9, 0.1, 0.1, 0.1, 0.1]
    state, *_ = fit_scripted(tmp_path, "val_accuracy", values, patience=0, epochs=5)
    assert (state.epochs_done, state.best_epoch, state.wait) == (5, 1, 4)


def test_a_monitor_that_is_not_reported_names_the_key_and_the_choices(tmp_path):
    with pytest.raises(ConfigError, match=r"trainer.monitor: 'val_acc' is not reported; choose from .*'val_accuracy'"):
        fit_scripted(tmp_path, "val_acc", [0.0] * 2, patience=0, epochs=2, scripted="val_accuracy")
