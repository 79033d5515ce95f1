"""preprocess.py, train.py and evaluate.py as SageMaker runs them: each job in its own folder laid
out as /opt/ml, with the files and variables SageMaker gives it, outputs carried to the next job's
inputs as S3 would (the model as model.tar.gz)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from affectexp.pipelines.contract import ROOT_ENV, container_overrides
from affectexp.processes import STOP_AT_ENV

REPOSITORY = Path(__file__).resolve().parents[1]
SIZE = 24
TINY = ["model.widths=[8,16]", "model.dense_units=16", "trainer.batch_size=32", "trainer.augment_workers=0",
        "logger.system_metrics=false"]


def job_env(root: Path, **variables: str) -> dict[str, str]:
    """This process's environment without any SageMaker variable, plus the job's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "TRAINING_JOB", ROOT_ENV))}
    return {**env, ROOT_ENV: str(root), "NO_ALBUMENTATIONS_UPDATE": "1", **variables}


def processing_job(root: Path, name: str, inputs: dict[str, Path], outputs: dict[str, Path]) -> None:
    """<root>/config/processingjobconfig.json as SageMaker Processing writes it (the parts read)."""
    config = {
        "ProcessingJobName": name,
        "ProcessingInputs": [{"InputName": n, "S3Input": {"LocalPath": str(p), "S3Uri": f"s3://bucket/{n}"}}
                             for n, p in inputs.items()],
        "ProcessingOutputConfig": {"Outputs": [{"OutputName": n, "S3Output": {"LocalPath": str(p),
                                                                              "S3Uri": f"s3://bucket/{n}"}}
                                               for n, p in outputs.items()]},
    }
    (root / "config").mkdir(parents=True, exist_ok=True)
    (root / "config" / "processingjobconfig.json").write_text(json.dumps(config))
    for folder in outputs.values():
        folder.mkdir(parents=True, exist_ok=True)


def run_entry(script: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script, *args], cwd=REPOSITORY, env=env, capture_output=True,
                          text=True, timeout=600)


def test_outside_sagemaker_nothing_is_added(tmp_path):
    for task in ("preprocess", "train", "evaluate"):
        assert container_overrides(task, {ROOT_ENV: str(tmp_path / "absent")}) == {}
        assert container_overrides(task, {ROOT_ENV: str(tmp_path)}) == {}


def test_hyperparameters_become_overrides_from_the_file_or_the_variables(tmp_path):
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    (config / "hyperparameters.json").write_text(json.dumps(
        {"optimizer.lr": "\"3e-4\"", "model": "resnet", "trainer.epochs": 2, "sagemaker_program": "train.py",
         "~callbacks.augmentation_samples": ""}))
    found = container_overrides("train", {ROOT_ENV: str(tmp_path), "TRAINING_JOB_NAME": "job-1"})
    assert list(found) == [f"model_dir={tmp_path}/model", f"report_dir={tmp_path}/output/data",
                           "logger.job_name=job-1", "optimizer.lr=3e-4", "model=resnet", "trainer.epochs=2",
                           "~callbacks.augmentation_samples"]
    (config / "hyperparameters.json").unlink()
    found = container_overrides("train", {ROOT_ENV: str(tmp_path), "SM_HP_OPTIMIZER.LR": "0.01",
                                          "SM_MODEL_DIR": "/m", "SM_OUTPUT_DATA_DIR": "/o"})
    assert list(found) == ["model_dir=/m", "report_dir=/o", "optimizer.lr=0.01"]


def test_a_training_job_s_checkpoint_folder_holds_its_run_folders(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    found = container_overrides("train", {ROOT_ENV: str(tmp_path), "TRAINING_JOB_NAME": "job-1"})
    assert found[f"paths.runs_dir={tmp_path}/checkpoints"] == "the job's checkpoint folder"
    assert not [o for o in container_overrides("preprocess", {ROOT_ENV: str(tmp_path)}) if "runs_dir" in o]


@pytest.mark.slow
def test_a_restarted_training_job_continues_its_mlflow_run_from_the_checkpoint_folder(built_cache, tmp_path):
    """A spot interruption: train.py killed (-9) after its first epoch's commit, its instance and
    work folder gone, the checkpoint folder brought back as SageMaker restores it from S3; the
    restarted job ends the same MLflow run, each epoch logged once."""
    from mlflow.tracking import MlflowClient

    from conftest import TEST_PER_CLASS, TRAIN_PER_CLASS, wait_until_stopped

    _, cache_cfg = built_cache
    job = tmp_path / "training-job"
    (job / "input/data/cache").mkdir(parents=True)
    shutil.copy(cache_cfg.cache.path, job / "input/data/cache")
    (job / "checkpoints").mkdir()
    tracking = tmp_path / "tracking"  # the MLflow server and its artifact store, outside the instance
    hyperparameters = dict(arg.split("=", 1) for arg in [*TINY, "trainer.epochs=2", "trainer.steps_per_epoch=3"])
    hyperparameters.update({"dataset.train_per_class": TRAIN_PER_CLASS, "dataset.test_per_class": TEST_PER_CLASS,
                            "cache.size": 48, "logger.tracking_uri": f"sqlite:///{tracking}/mlflow.db",
                            "logger.artifact_location": str(tracking / "artifacts"), "paths.root": str(job / "work")})
    (job / "input/config").mkdir(parents=True)
    (job / "input/config/hyperparameters.json").write_text(json.dumps(hyperparameters))
    tracking.mkdir()
    env = job_env(job, TRAINING_JOB_NAME="affectexp-train-spot", SM_CHANNEL_CACHE=str(job / "input/data/cache"),
                  SM_MODEL_DIR=str(job / "model"), SM_OUTPUT_DATA_DIR=str(job / "output/data"))

    interrupted = subprocess.Popen([sys.executable, "train.py"], cwd=REPOSITORY, env={**env, STOP_AT_ENV:
                                   "epoch_committed:1"}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wait_until_stopped(interrupted, "epoch_committed:1")  # it stops itself there
    interrupted.send_signal(signal.SIGKILL)
    interrupted.wait()
    interrupted.stdout.close()
    shutil.rmtree(job / "work")  # a new instance: only what the checkpoint folder kept comes back
    assert list((job / "checkpoints").iterdir())

    result = run_entry("train.py", [], env)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(hyperparameters["logger.tracking_uri"])
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert run.info.status == "FINISHED" and run.data.tags["affectexp.job_name"] == "affectexp-train-spot"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2]
    assert (job / "model" / "MLmodel").is_file()


def test_a_bad_hyperparameter_is_one_line_naming_it(tmp_path):
    config = tmp_path / "input" / "config"
    config.mkdir(parents=True)
    for hyperparameters, named in (({"trainer.epoch": "1"}, "trainer.epoch=1, from a hyperparameter"),
                                   ({"trainer.epochs": "three"}, "trainer.epochs=three, from a hyperparameter"),
                                   ({"optimizer.lr": "3e-4)"}, "hyperparameter 'optimizer.lr'")):
        (config / "hyperparameters.json").write_text(json.dumps(hyperparameters))
        result = run_entry("train.py", [f"paths.root={tmp_path}"], job_env(tmp_path, TRAINING_JOB_NAME="job"))
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert result.returncode == 1, result.stderr
        assert len(lines) == 1 and named in lines[0], result.stderr
        assert "hyperparameters.json" in lines[0]


@pytest.mark.slow
def test_preprocess_train_evaluate_run_as_sagemaker_jobs(tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    from affectexp.data.cache import FaceCache
    from affectexp.data.synthetic import generate_affectnet

    tracking_uri = f"sqlite:///{tmp_path}/tracking/mlflow.db"  # the MLflow server every job logs to
    (tmp_path / "tracking").mkdir()
    data_args = ["dataset.train_per_class=24", "dataset.test_per_class=8", f"cache.size={SIZE}"]

    # Processing job: the data set (from S3) in, the cache out.
    pre = tmp_path / "preprocess-job"
    generate_affectnet(pre / "processing/input/dataset", 24, 8, seed=0, num_workers=1)
    processing_job(pre, "affectexp-preprocess-1", {"dataset": pre / "processing/input/dataset"},
                   {"cache": pre / "processing/output/cache"})
    result = run_entry("preprocess.py", [*data_args, "num_workers=0", f"paths.root={pre}/work"], job_env(pre))
    assert result.returncode == 0, result.stderr[-3000:]
    [cache_file] = (pre / "processing/output/cache").glob("*.h5")

    # Training job: the cache as the channel "cache", hyperparameters as SageMaker writes them (strings).
    job = tmp_path / "training-job"
    shutil.copytree(pre / "processing/output/cache", job / "input/data/cache")
    (job / "input/config").mkdir(parents=True)
    hyperparameters = dict(arg.split("=", 1) for arg in [*data_args, *TINY, "trainer.epochs=1"])
    hyperparameters.update({"optimizer.lr": "\"3e-3\"", "logger.tracking_uri": tracking_uri,
                            "paths.root": str(job / "work")})
    (job / "input/config/hyperparameters.json").write_text(json.dumps(hyperparameters))
    env = job_env(job, TRAINING_JOB_NAME="affectexp-train-1", SM_CHANNEL_CACHE=str(job / "input/data/cache"),
                  SM_MODEL_DIR=str(job / "model"), SM_OUTPUT_DATA_DIR=str(job / "output/data"))
    result = run_entry("train.py", [], env)
    assert result.returncode == 0, result.stderr[-3000:]

    model = mlflow.pyfunc.load_model(str(job / "model"))  # the model artifact, as SageMaker uploads it
    with FaceCache(cache_file) as cache:
        faces = cache.read_faces("test", 0, cache.split_size("test"))
    assert faces.dtype == np.uint8 and faces.shape[1:] == (SIZE, SIZE, 1)
    probabilities = model.predict(faces)
    assert probabilities.shape == (len(faces), 5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)
    report = json.loads((job / "output/data/metrics.json").read_text())
    assert {"test/accuracy", "best_val/accuracy", "train/loss"} <= set(report["metrics"])
    assert (job / "output/data/test_confusion_matrix.png").is_file()
    client = MlflowClient(tracking_uri)
    train_run = client.get_run(report["run_id"])
    assert train_run.info.status == "FINISHED"
    assert train_run.data.tags["affectexp.job_name"] == "affectexp-train-1"
    assert train_run.data.params["optimizer.lr"] == "0.003"

    # Processing job: the cache and the training job's model.tar.gz in, the evaluation out.
    ev = tmp_path / "evaluate-job"
    shutil.copytree(pre / "processing/output/cache", ev / "processing/input/cache")
    (ev / "processing/input/model").mkdir(parents=True)
    with tarfile.open(ev / "processing/input/model/model.tar.gz", "w:gz") as tar:
        for item in (job / "model").iterdir():
            tar.add(item, arcname=item.name)
    processing_job(ev, "affectexp-evaluate-1", {"cache": ev / "processing/input/cache",
                                                "model": ev / "processing/input/model"},
                   {"evaluation": ev / "processing/output/evaluation"})
    result = run_entry("evaluate.py", [*data_args[2:], "dataset=synthetic", f"logger.tracking_uri={tracking_uri}",
                                       f"paths.root={ev}/work"], job_env(ev))
    assert result.returncode == 0, result.stderr[-3000:]
    evaluation = json.loads((ev / "processing/output/evaluation/evaluation.json").read_text())
    assert evaluation["split"] == "test" and evaluation["evaluated_faces"] == len(faces)
    assert evaluation["accuracy"] == pytest.approx(train_run.data.metrics["test/accuracy"], abs=1e-6)
    evaluate_run = client.get_run(evaluation["run_id"])
    assert evaluate_run.data.tags["affectexp.job_name"] == "affectexp-evaluate-1"
    assert evaluate_run.data.metrics["test/accuracy"] == pytest.approx(evaluation["accuracy"])
    assert "test/accuracy" in json.loads((ev / "processing/output/evaluation/metrics.json").read_text())["metrics"]



def test_the_pipelines_hyperparameters_read_back_as_the_overrides_they_came_from():
    from affectexp.pipelines.contract import hyperparameter_overrides
    from affectexp.pipelines.sagemaker import hyperparameters

    overrides = ["model=resnet", "+optimizer.weight_decay=1e-4", "model.widths=[8,16]", "~logger.run_name",
                 "logger.run_name='a b'"]
    assert hyperparameter_overrides(hyperparameters(overrides), "hyperparameters.json") == overrides
