"""Every run comparable: a single run, a sweep's jobs and a search's trials, started as a user
starts them into one MLflow store, are the same kind of record, read back through MlflowClient."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from test_sweeps import cli, children_of, local_store

EXPERIMENT = "comparable"
REGISTERED = "comparable_fer"


def finished(process) -> str:
    output, _ = process.communicate(timeout=900)
    assert process.returncode == 0, output[-3000:]
    return output


@pytest.fixture(scope="module")
def store(built_cache, tmp_path_factory):
    """(client, runs) after a single run, a 2-job sweep and a 2-trial search, one after the other
    (the shared cache, one store; run in turn: the machine has few cores)."""
    root = Path(built_cache[1].paths.root)
    # augmentation as the trials have it (light or strong): a run without one has no augmentation artifacts
    logged = f"logger.experiment_name={EXPERIMENT}", "augmentation=light", f"logger.register_model={REGISTERED}"
    finished(cli(root, *logged, "optimizer.lr=2e-3", "logger.register_alias=single"))
    finished(cli(root, *logged, "optimizer.lr=1e-3,3e-3", "logger.register_alias=sweep", multirun=True))
    finished(cli(root, *logged, "tuner=random", "tuner.max_trials=2", "logger.register_alias=champion",
                 f"tuner.export_config_dir={tmp_path_factory.mktemp('export')}"))
    client = MlflowClient(local_store(built_cache))
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client, client.search_runs([experiment.experiment_id])


def kinds(runs):
    """(single runs, {parent run: its children})."""
    top = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    parents = {p.info.run_id: p for p in top if children_of(runs, p)}
    return [r for r in top if r.info.run_id not in parents], {p: children_of(runs, p) for p in parents.values()}


def artifact_names(client, run) -> set[str]:
    return {a.path for a in client.list_artifacts(run.info.run_id)}


def run_metric_names(run) -> set[str]:
    return {name for name in run.data.metrics if not name.startswith("system/")}  # sampled, not every run has each


def test_every_run_has_the_same_params_metrics_and_artifacts(store):
    client, runs = store
    singles, families = kinds(runs)
    assert len(singles) == 1 and sorted(len(c) for c in families.values()) == [2, 2]
    trained = singles + [child for children in families.values() for child in children]
    reference = trained[0]
    # named from its model and command-line overrides (test_sweeps.QUICK, then ours: the last value of a key)
    assert reference.info.run_name == "simple_cnn size=48 epochs=1 steps_per_epoch=3 widths=[8,16,32] " \
        "dense_units=32 augmentation=light lr=2e-3"
    for run in trained:
        assert run.info.status == "FINISHED"
        assert run.data.params.keys() == reference.data.params.keys(), run.info.run_name
        assert run_metric_names(run) == run_metric_names(reference), run.info.run_name
        assert artifact_names(client, run) == artifact_names(client, reference), run.info.run_name
        assert {"config.yaml", "training_curves.png", "test_confusion_matrix.png"} <= artifact_names(client, run)
        assert len(run.outputs.model_outputs) == 1, f"{run.info.run_name} logged no model, or more than one"
        [dataset] = run.inputs.dataset_inputs
        assert dataset.dataset.name == "synthetic-gray48-basic5"
    names = run_metric_names(reference)
    assert {"train/loss", "val/accuracy", "best_val/accuracy", "test/accuracy", "test/macro_f1",
            "test/f1/happy", "train/seconds"} <= names
    assert all("/" in name for name in names)
    assert not [v for r in trained for v in r.data.params.values() if v == "None" or v.startswith("/")]


def test_each_parent_shows_its_best_child(store):
    client, runs = store
    _, families = kinds(runs)
    for parent, children in families.items():
        best = max(children, key=lambda c: c.data.metrics["best_val/accuracy"])
        assert parent.info.status == "FINISHED"
        assert parent.data.tags["affectexp.best_run_id"] == best.info.run_id
        assert parent.data.tags["affectexp.best_run_name"] == best.info.run_name
        assert parent.data.tags["affectexp.objective"] == "best_val/accuracy"
        assert parent.data.metrics["best_val/accuracy"] == best.data.metrics["best_val/accuracy"]
        assert parent.data.metrics["test/accuracy"] == best.data.metrics["test/accuracy"]
        best_params = {k.removeprefix("best."): v for k, v in parent.data.params.items() if k.startswith("best.")}
        assert best_params and all(best.data.params[k] == v for k, v in best_params.items())
        assert {"optimizer.lr"} <= best_params.keys()  # what differs between the children, never the base
        assert "leaderboard.csv" in artifact_names(client, parent)


def test_the_registry_holds_each_run_s_model_and_each_parent_s_best_child_s(store, built_cache):
    """logger.register_model/register_alias: a single run registers its own model, a sweep and a
    search only their best child's (not every child's), and each alias loads that model."""
    import mlflow

    from affectexp.inference.model import load_face_model

    client, runs = store
    singles, families = kinds(runs)
    expected = {"single": singles[0].info.run_id}
    for parent in families:
        expected["champion" if "affectexp.search" in parent.data.tags else "sweep"] = \
            parent.data.tags["affectexp.best_run_id"]
    assert sorted(expected) == ["champion", "single", "sweep"]
    assert len(client.search_model_versions(f"name = '{REGISTERED}'")) == 3
    for alias, run_id in expected.items():
        version = client.get_model_version_by_alias(REGISTERED, alias)
        [output] = client.get_run(run_id).outputs.model_outputs
        assert version.source == f"models:/{output.model_id}", alias
    mlflow.set_tracking_uri(local_store(built_cache))
    model = load_face_model(f"models:/{REGISTERED}@champion")
    assert model.class_names == ["neutral", "happy", "sad", "surprise", "anger"] and model.face_spec.size == 48


def test_registering_later_registers_the_finished_run_without_training(store, built_cache):
    """The same command again with another alias: nothing is trained, the finished run's model gets it."""
    client, _ = store
    root = Path(built_cache[1].paths.root)
    output = finished(cli(root, f"logger.experiment_name={EXPERIMENT}", "augmentation=light",
                          f"logger.register_model={REGISTERED}", "optimizer.lr=2e-3", "logger.register_alias=later"))
    assert "already trained" in output
    assert client.get_model_version_by_alias(REGISTERED, "later").version == \
        client.get_model_version_by_alias(REGISTERED, "single").version
