"""A killed run, rerun with the same command, ends as the run that was never killed.

Each test freezes a real train.py subprocess at a named moment (AFFECTEXP_STOP_AT: the
process stops itself there with SIGSTOP), kills it with SIGKILL and reruns the same config.
The test blocks until the kernel reports that stop (waitid), so a loaded machine only makes
it slower.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import (TINY_MODEL, compose_config, default_ctrl_c, running, wait_until_ended, wait_until_stopped,
                      worker_pids)

REPO = Path(__file__).resolve().parents[1]
# Deterministic on CPU, so the killed-and-resumed run must give the uninterrupted run's weights.
RESUME_OVERRIDES = ["trainer.epochs=3", "trainer.steps_per_epoch=6", "trainer.deterministic=true",
                    "augmentation=light", "trainer.augment_workers=1", "trainer.seed=3", "logger.run_name=resumable"]


def resume_config(cache_cfg, root: Path, extra: list[str] = ()):
    return compose_config("train", root, ["cache.size=48", f"cache.path={cache_cfg.cache.path}", *TINY_MODEL,
                                          *RESUME_OVERRIDES, *extra])


def the_run(cfg):
    client = MlflowClient(cfg.logger.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.logger.experiment_name)
    runs = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'resumable'")
    assert len(runs) == 1, f"{len(runs)} runs: a rerun must continue the killed run, not start another"
    return client, runs[0]


def final_weights(cfg):
    import keras

    from affectexp.tasks.train import config_fingerprint

    model = keras.models.load_model(Path(cfg.paths.runs_dir) / config_fingerprint(cfg) / "best.keras")
    return model.get_weights()


@pytest.fixture(scope="module")
def uninterrupted(built_cache, tmp_path_factory):
    """(config, MLflow client, run) of the run that is never killed."""
    from affectexp.tasks.train import train

    cfg = resume_config(built_cache[1], tmp_path_factory.mktemp("uninterrupted"))
    train(cfg)
    return (cfg, *the_run(cfg))


def start_train(cfg, stop_at: str, extra: list[str] = ()) -> subprocess.Popen:
    """train.py with cfg's paths and overrides (and `extra` ones), frozen when it reaches `stop_at`."""
    command = [sys.executable, "train.py", f"paths.root={cfg.paths.root}", "cache.size=48",
               f"cache.path={cfg.cache.path}", *TINY_MODEL, *RESUME_OVERRIDES, *extra]
    env = {**os.environ, "AFFECTEXP_STOP_AT": stop_at}
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, preexec_fn=default_ctrl_c,
                            stderr=subprocess.STDOUT)  # its output is a few kB: the pipe never fills


def kill(process: subprocess.Popen) -> None:
    augmenting = worker_pids(process.pid)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stdout.close()
    assert not wait_until_ended(augmenting), "augmenting processes outlived the killed training"


# mid-epoch; between an epoch's commit and its MLflow metrics; at the last epoch's commit;
# during evaluation (after val, before test); after logging the model; while logging artifacts.
MOMENTS = ["batch:2:3", "epoch_committed:1", "epoch_committed:3", "evaluated:val", "model_logged", "artifacts"]


@pytest.mark.slow
@pytest.mark.parametrize("stop_at", MOMENTS)
def test_killed_run_resumes_as_if_never_killed(built_cache, uninterrupted, tmp_path, stop_at):
    from affectexp.tasks.train import train

    reference_cfg, reference_client, reference = uninterrupted
    cfg = resume_config(built_cache[1], tmp_path)
    process = start_train(cfg, stop_at)
    wait_until_stopped(process, stop_at)
    kill(process)

    objective = train(cfg)
    client, run = the_run(cfg)
    assert run.info.status == "FINISHED"
    for name in ("train/loss", "val/accuracy", "train/learning_rate"):
        history = client.get_metric_history(run.info.run_id, name)
        expected = reference_client.get_metric_history(reference.info.run_id, name)
        assert [m.step for m in history] == [1, 2, 3], f"{name} logged at steps {[m.step for m in history]}"
        assert [m.value for m in history] == [m.value for m in expected], f"{name} differs from the uninterrupted run"
    for name in ("test/accuracy", "best_val/accuracy", "train/seconds"):
        assert len(client.get_metric_history(run.info.run_id, name)) == 1, f"{name} logged more than once"
    assert objective == reference.data.metrics["best_val/accuracy"] == run.data.metrics["best_val/accuracy"]
    assert run.data.metrics["test/accuracy"] == reference.data.metrics["test/accuracy"]
    for resumed, never_killed in zip(final_weights(cfg), final_weights(reference_cfg), strict=True):
        np.testing.assert_array_equal(resumed, never_killed)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "training_curves.png", "test_metrics.json"} <= artifacts
    assert len(run.outputs.model_outputs) == 1  # logged once, though the rerun reached logging again


@pytest.mark.slow
def test_a_run_augmented_on_the_device_resumes_with_the_same_random_draws(built_cache, tmp_path):
    """The augmentation layer's random generator is part of an epoch's commit: killed mid-epoch,
    the rerun augments that epoch as the run that was never killed did, to the same weights."""
    from affectexp.tasks.train import train

    on_device = ["augmentation=strong", "trainer.augment_on=device"]
    reference_cfg = resume_config(built_cache[1], tmp_path / "never_killed", on_device)
    train(reference_cfg)
    reference_client, reference = the_run(reference_cfg)
    cfg = resume_config(built_cache[1], tmp_path / "killed", on_device)
    process = start_train(cfg, "batch:2:3", on_device)
    wait_until_stopped(process, "batch:2:3")
    kill(process)
    train(cfg)
    client, run = the_run(cfg)
    history = client.get_metric_history(run.info.run_id, "train/loss")
    expected = reference_client.get_metric_history(reference.info.run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(m.step, m.value) for m in expected]
    for resumed, never_killed in zip(final_weights(cfg), final_weights(reference_cfg), strict=True):
        np.testing.assert_array_equal(resumed, never_killed)


def test_a_finished_run_is_not_trained_again(uninterrupted):
    from affectexp.tasks.train import train

    cfg, client, run = uninterrupted
    assert train(cfg) == run.data.metrics["best_val/accuracy"]
    _, again = the_run(cfg)
    assert again.info.run_id == run.info.run_id and again.info.end_time == run.info.end_time
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2, 3]


@pytest.mark.slow
def test_a_second_writer_stops_at_once_naming_the_first(built_cache, tmp_path):
    from affectexp.locks import LockHeld
    from affectexp.tasks.train import train

    cfg = resume_config(built_cache[1], tmp_path)
    first = start_train(cfg, "epoch_committed:1")
    try:
        wait_until_stopped(first, "epoch_committed:1")
        with pytest.raises(LockHeld, match=rf"paths.runs_dir: .* is being written by process {first.pid}\b"):
            train(cfg)
        # Its CLI form: one line, exit status 1, and the first process's run untouched.
        command = [sys.executable, "train.py", f"paths.root={cfg.paths.root}", "cache.size=48",
                   f"cache.path={cfg.cache.path}", *TINY_MODEL, *RESUME_OVERRIDES]
        second = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
        assert second.returncode == 1
        output = second.stdout + second.stderr
        errors = [line for line in output.splitlines() if "][ERROR]" in line]  # logging's, not TensorFlow's
        assert len(errors) == 1 and f"process {first.pid} " in errors[0] and "Traceback" not in output, output[-3000:]
    finally:
        kill(first)
    client, run = the_run(cfg)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == []  # killed before logging
    train(cfg)
    client, run = the_run(cfg)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2, 3]
    assert not running(first.pid)


@pytest.mark.slow
def test_ctrl_c_ends_training_in_one_line_and_the_rerun_continues(built_cache, tmp_path):
    from affectexp.tasks.train import train

    cfg = resume_config(built_cache[1], tmp_path)
    process = start_train(cfg, "epoch_committed:1")
    wait_until_stopped(process, "epoch_committed:1")
    augmenting = worker_pids(process.pid)
    process.send_signal(signal.SIGINT)  # delivered once the process runs again
    process.send_signal(signal.SIGCONT)
    process.wait(timeout=300)
    output = process.stdout.read().decode()
    process.stdout.close()
    errors = [line for line in output.splitlines() if "][ERROR]" in line]  # logging's, not TensorFlow's
    assert process.returncode == 130 and "Traceback" not in output, output[-3000:]
    assert len(errors) == 1 and "interrupted; rerun the same command to continue" in errors[0]
    assert not wait_until_ended(augmenting), "augmenting processes outlived the interrupted training"
    client, run = the_run(cfg)
    assert run.info.status == "FAILED"  # the run that raised ends FAILED, and the rerun continues it
    train(cfg)
    client, run = the_run(cfg)
    assert run.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2, 3]
