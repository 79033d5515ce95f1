"""The MLflow Project (MLproject): `mlflow run . -e pipeline` runs preprocess, train and evaluate as
child runs of the one run mlflow run starts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

REPOSITORY = Path(__file__).resolve().parents[1]
TINY = ("dataset.train_per_class=24 dataset.test_per_class=8 cache.size=24 num_workers=0 trainer.epochs=1 "
        "model.widths=[8,16] model.dense_units=16 trainer.batch_size=32 trainer.augment_workers=0 "
        "logger.system_metrics=false")


@pytest.mark.slow
def test_mlflow_run_pipeline_gives_one_run_with_its_three_steps_as_children(tmp_path):
    tracking_uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(tracking_uri)
    client.create_experiment("pipelines", artifact_location=(tmp_path / "artifacts").as_uri())
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    command = [str(mlflow_cli), "run", str(REPOSITORY), "-e", "pipeline", "--env-manager", "local",
               "--experiment-name", "pipelines", "-P", f"overrides=paths.root={tmp_path} {TINY}",
               "-P", "threshold=0.0"]
    # --env-manager local runs the project's `python` from PATH: this environment's, as once activated.
    path = f"{mlflow_cli.parent}{os.pathsep}{os.environ.get('PATH', '')}"
    # Without MLflow's variables from this process: mlflow.set_experiment in an earlier test exports
    # MLFLOW_EXPERIMENT_ID, which `mlflow run` would read as a second experiment option.
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env = {**inherited, "PATH": path, "MLFLOW_TRACKING_URI": tracking_uri, "NO_ALBUMENTATIONS_UPDATE": "1"}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]

    experiment = client.get_experiment_by_name("pipelines")
    runs = client.search_runs([experiment.experiment_id])
    [pipeline] = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    assert pipeline.info.status == "FINISHED" and pipeline.data.tags["affectexp.task"] == "pipeline"
    assert pipeline.data.tags["mlflow.project.entryPoint"] == "pipeline"  # the run mlflow run started
    children = {run.data.tags["affectexp.pipeline_step"]: run for run in runs
                if run.data.tags.get("mlflow.parentRunId") == pipeline.info.run_id}
    assert sorted(children) == ["evaluate", "preprocess", "train"] and len(runs) == 4
    assert all(run.info.status == "FINISHED" for run in children.values())
    assert children["preprocess"].data.metrics["preprocess/faces_written"] == 160  # 22+2+8 of each of 5 classes
    assert children["train"].data.params["cache.size"] == "24"
    assert children["evaluate"].data.params["split"] == "val"  # trainer.objective's split
    assert pipeline.data.metrics["evaluated/val/accuracy"] == pytest.approx(
        children["evaluate"].data.metrics["best_val/accuracy"])


def test_each_step_takes_its_share_of_the_experiments_overrides():
    from affectexp.errors import ConfigError
    from affectexp.pipelines.steps import step_overrides

    shares = step_overrides(["experiment=quick48", "model=resnet", "num_workers=0", "dataset.train_per_class=24",
                             "trainer.objective=test_macro_f1"])
    cache = ["dataset=synthetic", "classes=basic5", "cache.size=48", "cache.color=gray"]  # quick48's face size
    assert shares.preprocess == [*cache, "num_workers=0", "dataset.train_per_class=24"]
    assert shares.train == ["experiment=quick48", "model=resnet", "dataset.train_per_class=24",
                            "trainer.objective=test_macro_f1"]
    assert shares.evaluate == [*cache, "split=test", "dataset.train_per_class=24"]
    assert (shares.objective_split, shares.objective_metric) == ("test", "macro_f1")
    # Preprocess's split is the validation split's settings, evaluate's the split evaluated.
    shares = step_overrides(["split=train", "split.val_fraction=0.2"])
    assert shares.evaluate[-1] == "split=train" and shares.preprocess[-1] == "split.val_fraction=0.2"
    assert "split=train" not in shares.preprocess and "split.val_fraction=0.2" not in shares.evaluate
    with pytest.raises(ConfigError, match="^trainer_epochs: no step of the pipeline has this key"):
        step_overrides(["trainer_epochs=3"])
