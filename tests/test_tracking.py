"""What a run records, read back through MLflow's own client: curated params, metric names,
the cache as a dataset input, system metrics."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from omegaconf import OmegaConf

from affectexp import tracking
from conftest import compose_config


def test_params_leave_out_locations_logging_class_paths_and_unset_values(tmp_path):
    cfg = compose_config("train", tmp_path, ["dataset=affectnet", "dataset.root=/data/affectnet"])
    params, long = tracking.run_params(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    assert params["optimizer.lr"] == "0.001" and params["model.widths"] == "[32, 64, 128]"
    assert params["augmentation.name"] == "light" and params["cache.size"] == "96"
    assert not [k for k in params if k.split(".")[0] in ("paths", "logger", "tuner", "hydra")]
    assert not [k for k in params if k.rsplit(".", 1)[-1].startswith("_")]  # _target_, __class_fullname__
    assert params["model.target"] == "build_simple_cnn"  # the implementation by name, not its class path
    assert "None" not in params.values() and "trainer.steps_per_epoch" not in params
    assert "dataset.root" not in params and "cache.path" not in params
    assert not [v for v in params.values() if v.startswith("/") or len(v) > tracking.params.LONG_PARAM_CHARS]
    assert list(long) == ["augmentation.transform.transforms"]  # the serialised pipeline, as an artifact


def test_metric_names_group_by_split():
    assert [tracking.epoch_metric_name(n) for n in ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")] \
        == ["train/loss", "train/accuracy", "val/loss", "val/accuracy", "train/learning_rate"]
    assert tracking.evaluation_metric_name("val", "accuracy") == "best_val/accuracy"
    assert tracking.evaluation_metric_name("test", "f1/happy") == "test/f1/happy"


@pytest.mark.parametrize("form", ["{}", "file://{}"])
def test_a_folder_as_the_store_is_one_line_naming_a_store_to_pass(tmp_path, form):
    from affectexp.errors import ConfigError

    uri = form.format(tmp_path / "runs")
    with pytest.raises(ConfigError, match=rf"^logger.tracking_uri: {uri} is a folder \(MLflow's file store, which MLflow 3 "
                                         rf"refuses\); pass a store: sqlite:///{tmp_path}/runs/mlflow.db, or a server's"):
        tracking.configure(uri, "tracking", str(tmp_path / "artifacts"))
    assert not (tmp_path / "runs").exists()


@pytest.fixture
def store(tmp_path):
    experiment_id = tracking.configure(f"sqlite:///{tmp_path}/mlflow.db", "tracking", str(tmp_path / "artifacts"))
    yield experiment_id
    while mlflow.active_run():
        mlflow.end_run()


def test_the_cache_is_one_dataset_input_however_often_a_run_resumes(store, tmp_path):
    cache = tmp_path / "synthetic-gray48-basic5.h5"
    cache.write_bytes(b"")
    for _ in range(2):  # the second attempt continues the first run
        with tracking.tracked_run(store, "run", tmp_path / "work") as run:
            tracking.log_cache_input(str(cache), cache.stem, "0123456789abcdef0123", {"train": 90, "val": 10})
    [dataset_input] = MlflowClient().get_run(run.info.run_id).inputs.dataset_inputs
    assert dataset_input.dataset.name == "synthetic-gray48-basic5"
    assert dataset_input.dataset.digest == "0123456789abcdef"
    assert '"train_faces": 90' in dataset_input.dataset.profile
    assert [(t.key, t.value) for t in dataset_input.tags] == [("mlflow.data.context", "training")]


def test_system_metrics_are_logged_while_a_run_lasts(store, tmp_path):
    from mlflow.tracking.fluent import run_id_to_system_metrics_monitor

    with tracking.tracked_run(store, "system", tmp_path / "work", system_metrics=True) as run:
        # The monitor MLflow started for this run, asked for one sample now instead of after its
        # 10 s interval: no waiting on a clock; the run's end flushes what it recorded.
        monitor = run_id_to_system_metrics_monitor[run.info.run_id]
        monitor.collect_metrics()
        monitor.publish_metrics(monitor.aggregate_metrics())
    names = set(MlflowClient().get_run(run.info.run_id).data.metrics)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= names
