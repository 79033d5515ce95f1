"""Training end to end on the shared cache, read back through MLflow's own client."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from affectexp.data.cache import CacheError, FaceCache
from conftest import compose_config

EPOCHS = 8
TINY_MODEL = ["model.widths=[16,32,64]", "model.dense_units=64", "model.dropout=0.3"]


def train_config(cache_cfg, overrides: list[str] = ()):
    root = Path(cache_cfg.paths.root)
    return compose_config("train", root, ["cache.size=48", f"trainer.epochs={EPOCHS}", *TINY_MODEL, *overrides])


@pytest.fixture(scope="session")
def trained(built_cache):
    """(objective, config, MLflow run) of one short training run on the shared cache."""
    from affectexp.training.run import train

    cfg = train_config(built_cache[1], ["logger.run_name=e2e"])
    objective = train(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.logger.experiment_name)
    [run] = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'e2e'")
    return objective, cfg, run


def test_learns_the_synthetic_expressions(trained):
    objective, _, run = trained
    assert run.data.metrics["test_accuracy"] == pytest.approx(objective)
    assert objective >= 0.8, f"test accuracy {objective:.3f} on 5 classes (chance 0.2)"
    assert run.data.metrics["test_macro_f1"] >= 0.75
    assert run.data.metrics["test_balanced_accuracy"] >= 0.75


def test_run_records_params_metrics_and_artifacts(trained):
    _, cfg, run = trained
    client = MlflowClient(cfg.logger.tracking_uri)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["optimizer.lr"] == "0.001" and params["model.widths"] == "[16, 32, 64]"
    assert params["cache.size"] == "48" and int(params["model.parameters"]) > 0
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [m.step for m in history] == list(range(1, EPOCHS + 1))
    assert {"loss", "accuracy", "val_loss", "learning_rate", "test_f1_happy"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "model.keras", "test_confusion_matrix.png", "test_metrics.json",
            "training_curves.png"} <= artifacts


def test_logged_model_predicts_as_evaluated(trained, tmp_path):
    import keras

    _, cfg, run = trained
    path = MlflowClient(cfg.logger.tracking_uri).download_artifacts(run.info.run_id, "model.keras", str(tmp_path))
    model = keras.models.load_model(path)
    with FaceCache(cfg.cache.path) as cache:
        faces = cache.read_faces("test", 0, cache.split_size("test"))  # uint8, as stored
        labels = cache.labels("test")
    accuracy = float((model.predict(faces, verbose=0).argmax(axis=1) == labels).mean())
    assert accuracy == pytest.approx(run.data.metrics["test_accuracy"], abs=1e-6)


def test_diverging_run_ends_failed(built_cache):
    from affectexp.training.run import TrainingDiverged, train

    cfg = train_config(built_cache[1], ["optimizer=sgd", "optimizer.lr=1e12", "optimizer.schedule=constant",
                                        "trainer.epochs=1", "logger.run_name=diverges", "augmentation=none"])
    with pytest.raises(TrainingDiverged, match="optimizer.lr"):
        train(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.logger.experiment_name)
    [run] = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'diverges'")
    assert run.info.status == "FAILED"


def test_missing_cache_names_the_preprocess_command(tmp_path):
    from affectexp.training.run import train

    cfg = compose_config("train", tmp_path, ["cache.size=64"])
    with pytest.raises(CacheError, match=r"does not exist; build it with: python preprocess.py dataset=synthetic"):
        train(cfg)


def test_class_set_must_match_the_cache(built_cache):
    from affectexp.training.run import train

    cfg = train_config(built_cache[1], ["classes=affectnet8", f"cache.path={built_cache[1].cache.path}"])
    with pytest.raises(CacheError, match="holds classes"):
        train(cfg)


def test_killed_training_resumes_in_the_same_mlflow_run(built_cache):
    from affectexp.training.run import train

    overrides = ["trainer.epochs=3", "logger.run_name=resumed", "augmentation=none", "trainer.seed=7"]
    cfg = train_config(built_cache[1], overrides)
    root = Path(cfg.paths.root)
    command = [sys.executable, "train.py", f"paths.root={root}", "cache.size=48", f"trainer.epochs={EPOCHS}",
               *TINY_MODEL, *overrides]
    before = set(root.glob("runs/*/last.keras"))
    process = subprocess.Popen(command, cwd=Path(__file__).resolve().parents[1],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None and not set(root.glob("runs/*/last.keras")) - before:
        time.sleep(0.05)
    assert process.poll() is None, "training ended before it could be interrupted"
    time.sleep(0.5)  # let the first epoch's checkpoint finish writing
    process.send_signal(signal.SIGKILL)
    process.wait()

    train(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.logger.experiment_name)
    runs = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'resumed'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")]
    assert steps == [1, 2, 3], f"epochs logged {steps}: the run restarted instead of resuming"
