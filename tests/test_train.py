"""Training end to end on the shared cache, read back through MLflow's own client."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra.errors import ConfigCompositionException
from mlflow.tracking import MlflowClient

from affectexp.data.cache import CacheError, FaceCache
from conftest import EPOCHS, TINY_MODEL, compose_config, train_config


def test_learns_the_synthetic_expressions(trained):
    objective, _, run = trained
    assert run.data.metrics["best_val/accuracy"] == pytest.approx(objective)  # trainer.objective: val_accuracy
    accuracy = run.data.metrics["test/accuracy"]
    assert accuracy >= 0.8, f"test accuracy {accuracy:.3f} on 5 classes (chance 0.2)"
    assert run.data.metrics["test/macro_f1"] >= 0.75
    assert run.data.metrics["test/balanced_accuracy"] >= 0.75


def test_run_records_params_metrics_and_artifacts(trained):
    _, cfg, run = trained
    client = MlflowClient(cfg.logger.tracking_uri)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["optimizer.lr"] == "0.001" and params["model.widths"] == "[16, 32, 64]"
    assert params["cache.size"] == "48" and int(params["model.parameters"]) > 0
    history = client.get_metric_history(run.info.run_id, "val/accuracy")
    assert [m.step for m in history] == list(range(1, EPOCHS + 1))
    assert {"train/loss", "train/accuracy", "val/loss", "train/learning_rate", "test/f1/happy"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "test_confusion_matrix.png", "test_metrics.json",
            "training_curves.png", "augmentation_samples.png"} <= artifacts


def test_logged_model_predicts_as_evaluated_and_the_same_through_pyfunc_without_affectexp(trained, tmp_path):
    """The run's MLflow model (Keras flavor) carries its classes and the cache's face spec, and
    MLflow's generic loader, in a Python that never imports affectexp, predicts what Keras does."""
    import mlflow

    from affectexp.inference.model import load_face_model

    _, cfg, run = trained
    mlflow.set_tracking_uri(cfg.logger.tracking_uri)
    uri = f"runs:/{run.info.run_id}/model"
    model = load_face_model(uri)
    with FaceCache(cfg.cache.path) as cache:
        faces = cache.read_faces("test", 0, cache.split_size("test"))  # uint8, as stored
        labels, spec = cache.labels("test"), cache.face_spec
    probabilities = model.predict(faces)
    assert float((probabilities.argmax(axis=1) == labels).mean()) == pytest.approx(run.data.metrics["test/accuracy"],
                                                                                   abs=1e-6)
    assert model.class_names == list(cfg.classes.names) and model.face_spec == spec
    np.save(tmp_path / "faces.npy", faces)
    script = ("import sys, mlflow, numpy as np; mlflow.set_tracking_uri(sys.argv[1]); "
              "p = mlflow.pyfunc.load_model(sys.argv[2]).predict(np.load(sys.argv[3])); np.save(sys.argv[4], p); "
              "assert not [m for m in sys.modules if m.startswith('affectexp')]")
    subprocess.run([sys.executable, "-c", script, cfg.logger.tracking_uri, uri, str(tmp_path / "faces.npy"),
                    str(tmp_path / "pyfunc.npy")], check=True, cwd=tmp_path, capture_output=True, timeout=300)
    np.testing.assert_allclose(np.load(tmp_path / "pyfunc.npy"), probabilities, atol=1e-6)


def test_diverging_run_ends_failed(built_cache):
    from affectexp.tasks.train import TrainingDiverged, train

    cfg = train_config(built_cache[1], ["optimizer=sgd", "optimizer.lr=1e12", "optimizer/schedule=constant",
                                        "trainer.epochs=1", "logger.run_name=diverges", "augmentation=none"])
    with pytest.raises(TrainingDiverged, match="optimizer.lr"):
        train(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.logger.experiment_name)
    [run] = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'diverges'")
    assert run.info.status == "FAILED"


def test_missing_cache_names_the_preprocess_command(tmp_path):
    from affectexp.tasks.train import train

    cfg = compose_config("train", tmp_path, ["cache.size=64"])
    with pytest.raises(CacheError, match=r"does not exist; build it with: python preprocess.py dataset=synthetic"):
        train(cfg)


def test_class_set_must_match_the_cache(built_cache):
    from affectexp.tasks.train import train

    cfg = train_config(built_cache[1], ["classes=affectnet8", f"cache.path={built_cache[1].cache.path}"])
    with pytest.raises(CacheError, match="holds classes"):
        train(cfg)


def runs_named(cfg, run_name: str) -> list:
    client = MlflowClient(cfg.logger.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.logger.experiment_name)
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{run_name}'")


def test_cache_of_another_schema_version_stops_before_training(built_cache, tmp_path):
    import h5py

    from affectexp.tasks.train import train

    old_cache = tmp_path / "old.h5"
    shutil.copy(built_cache[1].cache.path, old_cache)
    with h5py.File(old_cache, "r+") as file:
        file.attrs["schema_version"] = 0
    cfg = train_config(built_cache[1], [f"cache.path={old_cache}", "logger.run_name=old_schema"])
    with pytest.raises(CacheError, match="schema version 0.*rebuild it with preprocess.py"):
        train(cfg)
    assert runs_named(cfg, "old_schema") == []


# A key that a model's file or an experiment adds (+model.widht) is checked against the builder's
# signature; a misspelt key on the command line already stops in Hydra (test_config.py).
@pytest.mark.parametrize("override", ["+model.widht=3", "model.dropout=high", "optimizer.lr=fast",
                                      "optimizer._target_=keras.optimizers.Adamx", "+optimizer.momentun=0.9",
                                      "optimizer.schedule._target_=schedules.nope", "trainer.augment_workers=-1"])
def test_bad_model_or_optimizer_value_stops_before_training(built_cache, override):
    from affectexp.errors import UserInputError
    from affectexp.tasks.train import train

    cfg = train_config(built_cache[1], [override, "logger.run_name=bad_value"])
    key = override.lstrip("+").split("=")[0]
    with pytest.raises(UserInputError, match=re.escape(key)):
        train(cfg)
    assert runs_named(cfg, "bad_value") == []


@pytest.mark.parametrize(("group", "choice"), [("model", "resnet"), ("augmentation", "strong"), ("optimizer", "adamw")])
def test_unknown_group_option_lists_the_choices(group, choice, tmp_path):
    with pytest.raises(ConfigCompositionException, match=rf"(?s)Available options in '{group}'.*{choice}"):
        compose_config("train", tmp_path, [f"{group}=no_such_{group}"])


def test_deterministic_training_gives_the_same_weights_twice(built_cache, tmp_path):
    import keras

    from affectexp.tasks.train import config_fingerprint, train

    overrides = ["trainer.deterministic=true", "trainer.epochs=2", "trainer.steps_per_epoch=4",
                 "augmentation=light", f"cache.path={built_cache[1].cache.path}"]
    weights = []
    # The same command twice, then with another seed: equal weights mean something only if the
    # seed reaches the training (initialisation, order, augmentation), so the third must differ.
    for attempt, seed in (("first", 0), ("second", 0), ("other_seed", 1)):
        cfg = compose_config("train", tmp_path / attempt,
                             ["cache.size=48", *TINY_MODEL, *overrides, f"trainer.seed={seed}"])
        train(cfg)
        model = keras.models.load_model(tmp_path / attempt / "runs" / config_fingerprint(cfg) / "best.keras")
        weights.append(model.get_weights())
    first, second, other = weights
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(first, other))


def test_a_config_trained_alone_and_as_a_sweep_job_are_two_runs_that_keep_their_own_folders(built_cache, tmp_path):
    """The job has its parent's folder: it neither continues nor takes over the run trained
    alone, whose rerun still finds it finished."""
    from affectexp.tasks.train import config_fingerprint, train
    from affectexp.tracking import Parent

    cfg = compose_config("train", tmp_path, ["cache.size=48", *TINY_MODEL, "trainer.epochs=1", "trainer.steps_per_epoch=2",
                                             f"cache.path={built_cache[1].cache.path}"])
    client = MlflowClient(cfg.logger.tracking_uri)

    def runs() -> dict[str, str | None]:
        [experiment] = client.search_experiments(filter_string=f"name = '{cfg.logger.experiment_name}'")
        return {run.info.run_id: run.data.tags.get("mlflow.parentRunId")
                for run in client.search_runs([experiment.experiment_id])}

    train(cfg)
    [alone] = runs()
    sweep = client.create_run(client.get_run(alone).info.experiment_id, run_name="sweep")
    train(cfg, Parent(sweep.info.run_id, "job"))
    train(cfg)  # finds the run trained alone: nothing to do
    [job] = [run for run, parent in runs().items() if parent == sweep.info.run_id]
    assert runs() == {alone: None, sweep.info.run_id: None, job: sweep.info.run_id}
    assert client.get_run(alone).info.status == client.get_run(job).info.status == "FINISHED"
    runs_dir, fingerprint = tmp_path / "runs", config_fingerprint(cfg)
    assert (runs_dir / fingerprint / "mlflow_run_id").read_text() == alone
    assert (runs_dir / "children" / sweep.info.run_id / fingerprint / "best.keras").is_file()


MIRRORED_RUN = """
import logging
import sys
import tensorflow as tf
logging.basicConfig(level=logging.INFO)
# Two logical CPU devices stand in for two GPUs; this must happen before TensorFlow starts.
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from conftest import compose_config
from affectexp.tasks.train import train
print("objective", train(compose_config("train", sys.argv[1], sys.argv[2:])))
"""


def test_mirrored_strategy_trains_on_two_replicas(built_cache):
    overrides = ["trainer.strategy=mirrored", "trainer.epochs=2", "trainer.steps_per_epoch=4", "logger.run_name=mirrored"]
    cfg = train_config(built_cache[1], overrides)
    arguments = [cfg.paths.root, "cache.size=48", *TINY_MODEL, *overrides]
    result = subprocess.run([sys.executable, "-c", MIRRORED_RUN, *arguments], cwd=Path(__file__).resolve().parent,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "MirroredStrategy over 2 replicas" in result.stderr
    [run] = runs_named(cfg, "mirrored")
    assert run.info.status == "FINISHED" and run.data.params["trainer.strategy"] == "mirrored"


@pytest.mark.parametrize("overrides", [["trainer.precision=auto", "trainer.jit_compile=true"],
                                       ["trainer.precision=mixed_bfloat16", "trainer.jit_compile=false"]])
def test_precision_and_jit_settings_train_and_are_logged(built_cache, overrides):
    from affectexp.tasks.train import train

    name = "precision_" + overrides[0].split("=")[1]
    cfg = train_config(built_cache[1], [*overrides, "trainer.epochs=1", "trainer.steps_per_epoch=3",
                                        f"logger.run_name={name}"])
    train(cfg)
    [run] = runs_named(cfg, name)
    assert run.info.status == "FINISHED" and {"train/loss", "val/accuracy"} <= set(run.data.metrics)
    for override in overrides:
        key, value = override.split("=")
        assert run.data.params[key].lower() == value  # booleans are logged as Python writes them


def test_cache_size_must_match_the_cache(built_cache):
    from affectexp.tasks.train import train

    cfg = train_config(built_cache[1], ["cache.size=96", f"cache.path={built_cache[1].cache.path}",
                                        "logger.run_name=wrong_size"])
    with pytest.raises(CacheError, match=r"holds 48x48 gray faces but cache.size=96 .*pass cache.size=48"):
        train(cfg)
    assert runs_named(cfg, "wrong_size") == []


@pytest.fixture
def read_only_store(tmp_path):
    """A real MLflow SQLite store on a file system remounted read-only (root may write any
    read-only file, but not on a read-only mount)."""
    mount_point = tmp_path / "store"
    mount_point.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=20m", "tmpfs", str(mount_point)]).returncode != 0:
        pytest.skip("mounting a tmpfs is not permitted here")
    try:
        uri = f"sqlite:///{mount_point}/mlflow.db"
        # In another process: a store this process had opened would keep the mount busy.
        create = f"from affectexp import tracking; tracking.configure({uri!r}, 'affectexp', {str(mount_point)!r})"
        subprocess.run([sys.executable, "-c", create], check=True, capture_output=True)
        subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], check=True)
        yield uri
    finally:
        subprocess.run(["umount", "-l", str(mount_point)])


def test_read_only_store_is_one_line_before_training(built_cache, read_only_store):
    root = Path(built_cache[1].paths.root)
    command = [sys.executable, "train.py", f"paths.root={root}", "cache.size=48", *TINY_MODEL,
               f"logger.tracking_uri={read_only_store}"]
    result = subprocess.run(command, cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True,
                            timeout=300)
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if "][ERROR]" in line]  # logging's, not TensorFlow's
    assert result.returncode == 1 and "Traceback" not in output, output[-3000:]
    assert len(errors) == 1 and "logger.tracking_uri: cannot use the MLflow store" in errors[0]
    assert "Read-only file system" in errors[0]
