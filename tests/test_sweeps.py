"""Sweeps: Hydra multirun and KerasTuner searches as parent/child MLflow runs, read back through MLflow."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from mlflow.tracking import MlflowClient

from affectexp.tasks.names import run_name, sweep_name
from affectexp.tracking import TrackingUnreachable
from affectexp.tasks.search import SearchError
from conftest import CONF_DIR, compose_config

REPO = Path(__file__).resolve().parents[1]
QUICK = ["cache.size=48", "trainer.epochs=1", "trainer.steps_per_epoch=3", "model.widths=[8,16,32]",
         "model.dense_units=32", "augmentation=none"]


def cli(root: Path, *overrides: str, multirun: bool = False) -> subprocess.Popen:
    """train.py as a user runs it, in its own process."""
    command = [sys.executable, "train.py", *(["-m"] if multirun else []), f"paths.root={root}", *QUICK, *overrides]
    return subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def local_store(built_cache) -> str:
    """The tracking URI of the shared workspace's local store."""
    return compose_config("train", Path(built_cache[1].paths.root)).logger.tracking_uri


def runs_of(tracking_uri: str, experiment_name: str):
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    return client, client.search_runs([experiment.experiment_id])


def children_of(runs, parent):
    return [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


def test_run_names_show_the_model_and_what_differs():
    overrides = ["model=resnet", "optimizer.lr=3e-4", "cache.size=48", "paths.root=/x", "logger.run_name=x"]
    assert run_name("resnet", overrides, ["model", "optimizer.lr"]) == "resnet lr=3e-4"  # a sweep's job
    assert run_name("resnet", overrides) == "resnet lr=3e-4 size=48"  # a single run: every override that counts
    assert run_name("simple_cnn", []) == "simple_cnn"
    assert sweep_name(["optimizer.lr=1e-3,3e-4", "cache.size=48"], ["optimizer.lr"]) == "sweep lr=1e-3,3e-4"
    assert sweep_name([], ["optimizer.lr", "model.dropout"]) == "sweep lr dropout"  # a sweeper's space


def test_multirun_is_one_parent_with_comparable_children(built_cache):
    root = Path(built_cache[1].paths.root)
    # Two sweeps started in the same second: one succeeds, one has a failing job.
    good = cli(root, "optimizer.lr=1e-3,3e-4", "logger.experiment_name=sweep", multirun=True)
    bad = cli(root, "optimizer=sgd", "optimizer/schedule=constant", "optimizer.lr=1e12",
              "logger.experiment_name=sweep_fails", "trainer.seed=1,2", multirun=True)
    good_out, _ = good.communicate(timeout=600)
    bad_out, _ = bad.communicate(timeout=600)
    assert good.returncode == 0, good_out[-3000:]
    assert bad.returncode != 0

    client, runs = runs_of(local_store(built_cache), "sweep")
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = children_of(runs, parent)
    assert parent.info.status == "FINISHED"
    assert sorted(r.info.run_name for r in children) == ["simple_cnn lr=0.0003", "simple_cnn lr=0.001"]
    assert parent.info.run_name == "sweep lr=1e-3,3e-4"
    assert {r.data.tags["affectexp.sweep_id"] for r in children} == {parent.data.tags["affectexp.sweep_id"]}
    assert children[0].data.params.keys() == children[1].data.params.keys()
    assert {r.data.params["optimizer.lr"] for r in children} == {"0.001", "0.0003"}
    assert all(r.info.status == "FINISHED" and "test/accuracy" in r.data.metrics for r in children)
    best = max(children, key=lambda r: r.data.metrics["best_val/accuracy"])
    assert parent.data.tags["affectexp.best_run_id"] == best.info.run_id
    assert parent.data.params == {"best.optimizer.lr": best.data.params["optimizer.lr"]}
    assert parent.data.metrics["best_val/accuracy"] == best.data.metrics["best_val/accuracy"]
    assert "leaderboard.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}

    _, failed_runs = runs_of(local_store(built_cache), "sweep_fails")
    [failed_parent] = [r for r in failed_runs if "mlflow.parentRunId" not in r.data.tags]
    assert failed_parent.info.status == "FAILED"
    assert "TrainingDiverged" in failed_parent.data.tags["affectexp.failure"]
    sweep_dirs = {r.data.tags["affectexp.sweep_dir"] for r in (parent, failed_parent)}
    assert len(sweep_dirs) == 2, "two sweeps shared an output directory"


@pytest.mark.parametrize("sweep, why", [
    ("model.dropout=0.2,high,0.3", "a job stopped: model.dropout: Value 'high' of type 'str' could not be converted"),
    ("model=simple_cnn,no_such_model", "a job's config could not be composed"),
    ("optimizer.lr=1e-3,-1", "a job stopped: optimizer.lr: -1; it must be the learning rate"),
])
def test_a_sweep_whose_job_cannot_start_ends_its_parent_failed(built_cache, sweep, why):
    root = Path(built_cache[1].paths.root)
    name = "refused_" + sweep.split("=")[0].replace(".", "_")
    process = cli(root, sweep, f"logger.experiment_name={name}", multirun=True)
    output, _ = process.communicate(timeout=600)
    assert process.returncode != 0
    client, runs = runs_of(local_store(built_cache), name)
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FAILED", output[-2000:]
    assert f"the sweep stopped before every job had run: {why}" in parent.data.tags["affectexp.failure"]
    # Hydra checks group choices before the first job, other values as each job starts.
    assert all(r.info.status == "FINISHED" for r in children_of(runs, parent))


def tuner_config(built_cache, tmp_path, *overrides):
    """(config, overrides) of a 2-trial random search on the shared cache, as train.py composes it."""
    root = Path(built_cache[1].paths.root)
    arguments = [f"paths.root={root}", *QUICK, "tuner=random", "tuner.max_trials=2",
                 f"tuner.export_config_dir={tmp_path}", "logger.experiment_name=search", *overrides]
    return compose_config("train", root, arguments), arguments


@pytest.mark.parametrize("tuner", ["bayesian", "hyperband"])
def test_bayesian_and_hyperband_searches_train_their_trials(built_cache, tmp_path, tuner):
    from affectexp.tasks.search import search

    cfg, overrides = tuner_config(built_cache, tmp_path, f"tuner={tuner}", "trainer.epochs=2",
                                  f"logger.experiment_name=search_{tuner}")
    objective = search(cfg, overrides)
    client, runs = runs_of(cfg.logger.tracking_uri, f"search_{tuner}")
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = children_of(runs, parent)
    assert len(trials) >= 2 and all(t.info.status == "FINISHED" for t in trials)
    best = max(trials, key=lambda t: t.data.metrics["best_val/accuracy"])
    assert objective == best.data.metrics["best_val/accuracy"]
    assert parent.data.tags["affectexp.best_run_id"] == best.info.run_id
    # One value per key in each trial: the trial's own, not the search's base (augmentation=none).
    assert {t.data.params["augmentation.name"] for t in trials} <= {"light", "strong"}
    epochs = {int(t.data.params["trainer.epochs"]) for t in trials}
    assert epochs == {2} if tuner == "bayesian" else epochs <= {1, 2}  # Hyperband: its tuner/epochs budget


def test_tuner_search_logs_trials_as_nested_runs_and_exports_the_best(built_cache, tmp_path):
    from affectexp.tasks.search import search

    cfg, overrides = tuner_config(built_cache, tmp_path)
    objective = search(cfg, overrides)
    client, runs = runs_of(cfg.logger.tracking_uri, "search")
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = children_of(runs, parent)
    assert len(trials) == 2 and all(t.info.status == "FINISHED" for t in trials)
    assert sorted(t.info.run_name.split(" lr=")[0] for t in trials) == ["trial 1 simple_cnn", "trial 2 simple_cnn"]
    # A trial is a training run: the resolved config as params, per-epoch curves, evaluation, model.
    assert all({"optimizer.lr", "model.dropout", "augmentation.name", "cache.size"} <= t.data.params.keys()
               for t in trials)
    assert all({"best_val/accuracy", "test/accuracy"} <= t.data.metrics.keys() for t in trials)
    assert [m.step for m in client.get_metric_history(trials[0].info.run_id, "val/accuracy")] == [1]
    assert all(len(t.outputs.model_outputs) == 1 for t in trials)

    best = max(trials, key=lambda t: t.data.metrics["best_val/accuracy"])
    assert objective == pytest.approx(best.data.metrics["best_val/accuracy"])
    assert parent.data.tags["affectexp.best_run_id"] == best.info.run_id
    assert parent.data.metrics["test/accuracy"] == best.data.metrics["test/accuracy"]
    assert parent.data.params["best.optimizer.lr"] == best.data.params["optimizer.lr"]
    assert "optimizer.lr" not in parent.data.params  # the base config is not shown as a result
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"leaderboard.csv", "tuned_random.yaml"} <= artifacts

    # The exported experiment reproduces the best trial's values.
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        reproduced = compose("train", overrides=[f"hydra.searchpath=[file://{tmp_path}]", "experiment=tuned_random"])
    assert reproduced.optimizer.lr == pytest.approx(float(best.data.params["optimizer.lr"]))
    assert reproduced.augmentation.name == best.data.params["augmentation.name"]



def test_interrupted_search_resumes_in_the_same_parent_run(built_cache, tmp_path):
    from affectexp.tasks.search import search

    overrides = ["tuner.max_trials=3", "logger.experiment_name=resumed_search"]
    cfg, arguments = tuner_config(built_cache, tmp_path, *overrides)
    root = Path(cfg.paths.root)
    process = cli(root, "tuner=random", f"tuner.export_config_dir={tmp_path}", *overrides)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and process.poll() is None:
        if any('"COMPLETED"' in p.read_text() for p in root.glob("runs/tuner/random-*/trial_*/trial.json")):
            break
        time.sleep(0.05)
    assert process.poll() is None, "the search ended before it could be interrupted"
    process.kill()
    process.communicate()

    search(cfg, arguments)
    client, runs = runs_of(cfg.logger.tracking_uri, "resumed_search")
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FINISHED"
    trials = children_of(runs, parent)
    finished = [t for t in trials if t.info.status == "FINISHED"]
    assert len(finished) == 3, [(t.info.run_name, t.info.status) for t in trials]
    assert all(t.info.status in ("FINISHED", "KILLED") for t in trials)


@pytest.mark.parametrize(("override", "message"), [
    ("tuner.type=grid", "tuner.type: unknown tuner 'grid'"),
    ("tuner.objective=val_f1", "tuner.objective: 'val_f1' is never reported"),
    ("tuner.space=null", "tuner.space: the search space is empty"),
    ("+tuner.space.model.width={type:float,min:1,max:2}", "tuner.space.model.width: model.width is not a config key"),
    ("tuner.space.optimizer.lr.max=1e-6", "tuner.space.optimizer.lr: a float needs min < max"),
    ("tuner.space.augmentation.values=[light,wild]", "unknown \\['wild'\\]"),
])
def test_bad_search_stops_before_any_trial(built_cache, tmp_path, override, message):
    from affectexp.tasks.search import search

    cfg, overrides = tuner_config(built_cache, tmp_path, override, "logger.experiment_name=bad_search")
    with pytest.raises(SearchError, match=message):
        search(cfg, overrides)
    client = MlflowClient(cfg.logger.tracking_uri)
    assert client.get_experiment_by_name("bad_search") is None


def test_bad_training_value_stops_a_search_before_its_run(built_cache, tmp_path):
    from affectexp.errors import ConfigError
    from affectexp.tasks.search import search

    cfg, overrides = tuner_config(built_cache, tmp_path, "+optimizer.momentun=0.9",
                                  "logger.experiment_name=bad_search_value")
    with pytest.raises(ConfigError, match="optimizer.momentun"):
        search(cfg, overrides)
    assert MlflowClient(cfg.logger.tracking_uri).get_experiment_by_name("bad_search_value") is None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_tracking_server_stops_before_training(built_cache, caplog):
    from affectexp.tasks.train import train

    uri = f"http://127.0.0.1:{free_port()}"
    cfg = compose_config("train", Path(built_cache[1].paths.root), [*QUICK, f"logger.tracking_uri={uri}"])
    with pytest.raises(TrackingUnreachable, match=f"logger.tracking_uri: no MLflow server answers at {uri}"):
        train(cfg)


def test_offline_logging_falls_back_to_the_local_store(built_cache, tmp_path, caplog):
    from affectexp.tasks.train import train

    local = f"sqlite:///{tmp_path / 'offline.db'}"
    cfg = compose_config("train", Path(built_cache[1].paths.root), [
        *QUICK, f"logger.tracking_uri=http://127.0.0.1:{free_port()}", "logger.offline=true",
        f"logger.offline_uri={local}", "logger.experiment_name=offline"])
    train(cfg)
    assert "logging offline to " + local in caplog.text
    _, runs = runs_of(local, "offline")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"


@pytest.mark.parametrize("launcher", ["joblib", "slurm", "submitit_local", "ray_cluster"])
def test_launcher_configs_compose(launcher, tmp_path):
    if launcher == "ray_cluster":
        pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="optional extra: affectexp[ray]")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert "Launcher" in cfg.hydra.launcher._target_


def test_optuna_search_config_composes():
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=optuna"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_.endswith("OptunaSweeper")
    assert cfg.trainer.objective == "val_accuracy" and cfg.hydra.sweeper.direction == "maximize"


def test_sweep_and_search_against_a_real_mlflow_server(built_cache, tmp_path):
    """A real `mlflow server` on loopback: a 2-job sweep and a 2-trial search, read back over HTTP."""
    port = free_port()
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    server = subprocess.Popen(
        [str(mlflow_bin), "server", "--backend-store-uri", f"sqlite:///{tmp_path / 'server.db'}",
         "--default-artifact-root", str(tmp_path / "server-artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(uri + "/health", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline and server.poll() is None, "mlflow server did not start"
                time.sleep(0.5)
        root = Path(built_cache[1].paths.root)
        # Jobs in parallel processes (joblib): each finds the sweep's parent run on its own.
        sweep = cli(root, f"logger.tracking_uri={uri}", "logger.experiment_name=remote", "model.dropout=0.2,0.4",
                    "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", multirun=True)
        search = cli(root, f"logger.tracking_uri={uri}", "logger.experiment_name=remote_search", "tuner=random",
                     "tuner.max_trials=2", f"tuner.export_config_dir={tmp_path}")
        for process in (sweep, search):
            output, _ = process.communicate(timeout=600)
            assert process.returncode == 0, output[-3000:]

        client, runs = runs_of(uri, "remote")
        [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
        children = children_of(runs, parent)
        assert sorted(r.info.run_name for r in children) == ["simple_cnn dropout=0.2", "simple_cnn dropout=0.4"]
        assert children[0].data.params.keys() == children[1].data.params.keys()
        assert all(len(client.get_metric_history(r.info.run_id, "train/loss")) == 1 for r in children)
        assert all(len(r.outputs.model_outputs) == 1 for r in children)

        _, searched = runs_of(uri, "remote_search")
        [search_parent] = [r for r in searched if "mlflow.parentRunId" not in r.data.tags]
        assert len(children_of(searched, search_parent)) == 2
        assert "leaderboard.csv" in {a.path for a in client.list_artifacts(search_parent.info.run_id)}
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)


def test_distributed_search_with_a_chief_and_two_workers(built_cache, tmp_path):
    """KerasTuner's distributed mode on loopback: the chief's run holds every worker's trials."""
    port = str(free_port())
    overrides = ["tuner=random", "tuner.max_trials=2", f"tuner.export_config_dir={tmp_path}",
                 "logger.experiment_name=distributed", "tuner.worker_wait_s=300"]
    root = Path(built_cache[1].paths.root)
    processes = []
    try:
        for role in ("chief", "tuner0", "tuner1"):
            env = {**os.environ, "KERASTUNER_TUNER_ID": role, "KERASTUNER_ORACLE_IP": "127.0.0.1",
                   "KERASTUNER_ORACLE_PORT": port}
            command = [sys.executable, "train.py", f"paths.root={root}", *QUICK, *overrides]
            processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                              stderr=subprocess.STDOUT, text=True))
        for process in processes:
            output, _ = process.communicate(timeout=600)
            assert process.returncode == 0, output[-3000:]
    finally:
        for process in processes:  # a worker that died would leave the chief waiting forever
            if process.poll() is None:
                process.kill()
    _, runs = runs_of(local_store(built_cache), "distributed")
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = children_of(runs, parent)
    assert parent.info.status == "FINISHED" and "test/accuracy" in parent.data.metrics
    assert len(trials) == 2 and all(t.info.status == "FINISHED" for t in trials)


def test_optuna_search_runs_its_trials_as_one_sweep(built_cache):
    root = Path(built_cache[1].paths.root)
    process = cli(root, "hparams_search=optuna", "hydra.sweeper.n_trials=2", "logger.experiment_name=optuna")
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    assert "Best value" in output or "best_value" in output.lower()
    _, runs = runs_of(local_store(built_cache), "optuna")
    [parent] = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    trials = children_of(runs, parent)
    assert len(trials) == 2 and all("best_val/accuracy" in t.data.metrics for t in trials)
    assert all(t.info.run_name.startswith("simple_cnn lr=") for t in trials)
