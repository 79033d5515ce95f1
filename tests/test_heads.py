"""Valence and arousal heads: the masked loss, AffectNet's four metrics, and a multi-task run
that learns both the expressions and valence, evaluated, logged and served like any run."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from affectexp.data.cache import FaceCache
from conftest import compose_config, train_config

NA = -2.0  # AffectNet's "not annotated"


def test_unannotated_rows_give_no_affect_loss_and_no_gradient():
    """A batch of only -2 targets: zero loss and a zero gradient for every weight of a real model
    (GradientTape); in a mixed batch the loss is the mean squared error over the annotated values
    only, and the -2 values' predictions get no gradient."""
    import keras
    import tensorflow as tf

    from affectexp.training.losses import MaskedAffectError

    loss = MaskedAffectError()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"),
                              keras.layers.Dense(2, activation="tanh")])
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    with tf.GradientTape() as tape:
        value = loss(np.full((5, 2), NA, np.float32), model(x))
    gradients = tape.gradient(value, model.trainable_variables)
    assert float(value) == 0.0
    assert all(g is not None and not np.any(np.asarray(g)) for g in gradients)

    predicted = tf.Variable([[0.5, 0.1], [0.2, -0.4], [-0.3, 0.9]])
    targets = np.array([[0.0, NA], [NA, NA], [-0.5, 0.5]], np.float32)
    with tf.GradientTape() as tape:
        value = loss(targets, predicted)
    # Annotated values: (0.5 - 0)^2, (-0.3 + 0.5)^2, (0.9 - 0.5)^2: mean (0.25 + 0.04 + 0.16) / 3.
    assert float(value) == pytest.approx(0.45 / 3, rel=1e-6)
    gradient = np.asarray(tape.gradient(value, predicted))
    np.testing.assert_allclose(gradient[targets == NA], 0.0)
    # d/dp of the mean over 3 values: 2 (p - t) / 3.
    np.testing.assert_allclose(gradient[targets != NA], 2 * np.array([0.5, 0.2, 0.4]) / 3, rtol=1e-6)


# Hand-computed: errors p - t = -0.5, 0, 0.5, -0.25; means t 0.25, p 0.1875; deviations
# t (0.75, -0.75, -0.5, 0.5), p (0.3125, -0.6875, 0.0625, 0.3125); sums of products 0.875,
# of squares t 1.625, p 0.671875 (population variances 0.40625, 0.16796875, covariance 0.21875).
TRUE = np.array([1.0, -0.5, -0.25, 0.75])
PREDICTED = np.array([0.5, -0.5, 0.25, 0.5])
RMSE = np.sqrt(0.5625 / 4)  # 0.375
PEARSON = 0.875 / np.sqrt(1.625 * 0.671875)  # 0.8374
CCC = 2 * 0.21875 / (0.40625 + 0.16796875 + (0.25 - 0.1875) ** 2)  # 28/37 = 0.7568
SAGR = 3 / 4  # the third value's sign is wrong


def test_affect_metrics_match_hand_computed_values():
    from affectexp.training.metrics import affect_metrics, ccc, pearson, rmse, sagr

    assert rmse(TRUE, PREDICTED) == pytest.approx(0.375)
    assert pearson(TRUE, PREDICTED) == pytest.approx(PEARSON)
    assert ccc(TRUE, PREDICTED) == pytest.approx(28 / 37) == pytest.approx(CCC)
    assert sagr(TRUE, PREDICTED) == pytest.approx(SAGR)
    assert ccc(TRUE, TRUE) == pytest.approx(1.0) and ccc(TRUE, np.full(4, 0.3)) == 0.0
    assert ccc(TRUE, -TRUE) < 0 and pearson(TRUE, 2 * TRUE + 0.1) == pytest.approx(1.0)
    # Pearson ignores a scale and an offset; CCC does not.
    assert ccc(TRUE, 2 * TRUE + 0.1) < 0.8

    # As evaluation reports them: valence and arousal columns, -2 rows left out of each.
    y_true = np.array([[t, -t] for t in TRUE] + [[NA, 0.2], [NA, NA]])
    y_pred = np.array([[p, -p] for p in PREDICTED] + [[0.9, 0.2], [-0.9, 0.9]])
    metrics = affect_metrics(y_true, y_pred, NA)
    assert metrics["annotated_valence"] == 4 and metrics["annotated_arousal"] == 5
    assert metrics["rmse_valence"] == pytest.approx(RMSE) and metrics["ccc_valence"] == pytest.approx(CCC)
    assert metrics["pearson_valence"] == pytest.approx(PEARSON) and metrics["sagr_valence"] == pytest.approx(SAGR)
    assert metrics["rmse_arousal"] == pytest.approx(np.sqrt(0.5625 / 5))  # one more row, predicted exactly
    assert set(affect_metrics(np.full((3, 2), NA), y_pred[:3], NA)) == {"annotated_valence", "annotated_arousal"}


@pytest.fixture(scope="module")
def multitask(built_cache):
    """(objective, config, MLflow run) of a tiny multi-task run on the session's synthetic cache,
    optimising the validation CCC of valence."""
    from affectexp.tasks.train import train

    cfg = train_config(built_cache[1], ["head=multitask", "trainer.objective=val_ccc_valence",
                                        "logger.run_name=multitask"])
    objective = train(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.logger.experiment_name)
    [run] = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'multitask'")
    return objective, cfg, run


def test_a_multitask_run_learns_the_expressions_and_valence(multitask):
    objective, cfg, run = multitask
    metrics = run.data.metrics
    assert metrics["best_val/ccc_valence"] == pytest.approx(objective)  # trainer.objective=val_ccc_valence
    # Chance is a CCC of 0 (a constant or unrelated prediction), 0.2 accuracy on 5 classes.
    assert metrics["test/ccc_valence"] >= 0.6, metrics
    assert metrics["test/pearson_valence"] >= 0.6 and metrics["test/sagr_valence"] >= 0.7
    with FaceCache(cfg.cache.path) as cache:  # every synthetic face of the 8 expressions is annotated
        true_valence, test_faces = cache.affect("test")[:, 0], cache.split_size("test")
    # Predicting the mean valence for every face scores an RMSE of the valences' spread.
    assert metrics["test/rmse_valence"] < true_valence.std(), (metrics["test/rmse_valence"], true_valence.std())
    assert metrics["test/accuracy"] >= 0.6
    for split in ("best_val", "test"):
        assert {f"{split}/{m}_{d}" for m in ("rmse", "pearson", "sagr", "ccc")
                for d in ("valence", "arousal")} <= set(metrics)
    # Per epoch, the expression accuracy keeps its name whatever the head; each output's loss is logged too.
    assert {"train/accuracy", "val/accuracy", "train/loss", "val/affect_loss", "val/expression_loss"} <= set(metrics)
    client = MlflowClient(cfg.logger.tracking_uri)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"test_affect_scatter.png", "best_val_affect_scatter.png", "test_confusion_matrix.png"} <= artifacts
    reported = json.loads(open(client.download_artifacts(run.info.run_id, "test_metrics.json")).read())
    assert reported["annotated_valence"] == reported["evaluated_faces"] == test_faces


def test_the_multitask_model_is_logged_with_both_outputs_and_serves_them(multitask, tmp_path):
    """Its MLflow model's signature and metadata name both outputs; loaded back it predicts the
    logged test metrics, and MLflow's generic loader, without affectexp, gives the same (a dict
    by output, in a 0-d array: how MLflow's Keras flavor hands back a model's dict; `mlflow models
    serve` answers {"predictions": {"expression": ..., "affect": ...}})."""
    import mlflow
    from mlflow.models import Model

    from affectexp.inference.model import load_face_model
    from affectexp.training.metrics import ccc

    _, cfg, run = multitask
    mlflow.set_tracking_uri(cfg.logger.tracking_uri)
    uri = f"runs:/{run.info.run_id}/model"
    info = Model.load(mlflow.artifacts.download_artifacts(f"{uri}/MLmodel"))
    assert info.metadata["outputs"] == ["expression", "affect"]
    assert info.metadata["affect_columns"] == ["valence", "arousal"]
    outputs = {spec.name: spec.shape for spec in info.signature.outputs.inputs}
    assert outputs == {"expression": (-1, len(cfg.classes.names)), "affect": (-1, 2)}
    model = load_face_model(uri)
    with FaceCache(cfg.cache.path) as cache:
        faces, labels, affect = cache.read_faces("test", 0, cache.split_size("test")), cache.labels("test"), \
            cache.affect("test")
    predicted = model.predict_outputs(faces)
    assert float((predicted["expression"].argmax(axis=1) == labels).mean()) == pytest.approx(
        run.data.metrics["test/accuracy"], abs=1e-6)
    assert ccc(affect[:, 0], predicted["affect"][:, 0]) == pytest.approx(run.data.metrics["test/ccc_valence"],
                                                                         abs=1e-5)
    np.testing.assert_array_equal(model.predict(faces), predicted["expression"])
    np.save(tmp_path / "faces.npy", faces)
    script = ("import sys, mlflow, numpy as np; mlflow.set_tracking_uri(sys.argv[1]); "
              "p = mlflow.pyfunc.load_model(sys.argv[2]).predict(np.load(sys.argv[3])); "
              "np.savez(sys.argv[4], **p.item()); assert not [m for m in sys.modules if m.startswith('affectexp')]")
    subprocess.run([sys.executable, "-c", script, cfg.logger.tracking_uri, uri, str(tmp_path / "faces.npy"),
                    str(tmp_path / "pyfunc.npz")], check=True, cwd=tmp_path, capture_output=True, timeout=300)
    served = np.load(tmp_path / "pyfunc.npz")
    for name in ("expression", "affect"):
        np.testing.assert_allclose(served[name], predicted[name], atol=1e-6)


def test_evaluate_py_reports_the_affect_metrics(multitask):
    from affectexp.tasks.evaluate import evaluate

    _, train_cfg, train_run = multitask
    cfg = compose_config("evaluate", train_cfg.paths.root, [
        "cache.size=48", f"cache.path={train_cfg.cache.path}", f"model_uri=runs:/{train_run.info.run_id}/model",
        "logger.run_name=reevaluated multitask"])
    assert evaluate(cfg) == pytest.approx(train_run.data.metrics["test/accuracy"], abs=1e-6)
    client = MlflowClient(cfg.logger.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.logger.experiment_name)
    [run] = client.search_runs([experiment.experiment_id],
                               filter_string="attributes.run_name = 'reevaluated multitask'")
    for metric in ("test/accuracy", "test/ccc_valence", "test/rmse_arousal", "test/sagr_valence"):
        assert run.data.metrics[metric] == pytest.approx(train_run.data.metrics[metric], abs=1e-5)
    assert run.data.params["model.outputs"] == '["expression", "affect"]'
    assert "test_affect_scatter.png" in {a.path for a in client.list_artifacts(run.info.run_id)}


def test_predict_py_writes_valence_and_arousal_and_reproduces_the_test_metrics(multitask, synthetic_root, tmp_path,
                                                                               caplog):
    """predict.py on the test list with the multi-task model: a row per face with its class
    probabilities, valence and arousal and the list's own, from which the run's test accuracy and
    valence CCC come back, and a closing line that reports them."""
    import csv
    import logging
    import re

    from affectexp.tasks.predict import predict
    from affectexp.training.metrics import ccc

    _, train_cfg, run = multitask
    output = tmp_path / "faces.csv"
    cfg = compose_config("predict", train_cfg.paths.root, [
        f"model_uri=runs:/{run.info.run_id}/model", f"logger.tracking_uri={train_cfg.logger.tracking_uri}",
        f"inputs={synthetic_root / 'Manually_Annotated_file_lists' / 'validation.csv'}",
        f"images_dir={synthetic_root / 'Manually_Annotated_Images'}", f"output={output}"])
    with caplog.at_level(logging.INFO, logger="affectexp"):
        predict(cfg)
    with open(output, newline="") as handle:
        rows = list(csv.DictReader(handle))
    names = list(train_cfg.classes.names)
    assert list(rows[0])[8:] == ["predicted", "confidence", *(f"p_{name}" for name in names), "valence", "arousal",
                                 "true_class", "row", "true_valence", "true_arousal"]
    known = [row for row in rows if row["true_class"] in names]
    with FaceCache(train_cfg.cache.path) as cache:
        assert len(known) == cache.split_size("test")
    metrics = run.data.metrics
    assert np.mean([row["predicted"] == row["true_class"] for row in known]) == pytest.approx(
        metrics["test/accuracy"], abs=1e-9)
    true = np.array([[float(row["true_valence"]), float(row["true_arousal"])] for row in known])
    predicted = np.array([[float(row["valence"]), float(row["arousal"])] for row in known])
    assert np.all(np.abs(predicted) <= 1)  # tanh
    assert ccc(true[:, 0], predicted[:, 0]) == pytest.approx(metrics["test/ccc_valence"], abs=1e-4)
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Valence and arousal on")]
    reported = re.search(rf"on {len(known)} and {len(known)} annotated list rows: CCC ([-.\d]+) and ([-.\d]+)", line)
    assert reported, line
    assert float(reported[1]) == pytest.approx(metrics["test/ccc_valence"], abs=2e-4)
    assert float(reported[2]) == pytest.approx(metrics["test/ccc_arousal"], abs=2e-4)


def test_the_tflite_export_of_the_multitask_model_gives_both_outputs_as_keras(multitask, tmp_path):
    import mlflow

    from affectexp.inference.export import TfliteModel, export_model
    from affectexp.inference.model import load_face_model

    _, cfg, run = multitask
    mlflow.set_tracking_uri(cfg.logger.tracking_uri)
    model = load_face_model(f"runs:/{run.info.run_id}/model")
    path = export_model(model, "tflite", tmp_path / "tflite")
    description = json.loads((tmp_path / "tflite" / "model.json").read_text())
    assert description["outputs"] == ["expression", "affect"]
    assert description["affect_columns"] == ["valence", "arousal"]
    with FaceCache(cfg.cache.path) as cache:
        faces = cache.read_faces("test", 0, 37)  # not a multiple of anything: the signature resizes
    exported, expected = TfliteModel(path).predict_outputs(faces), model.predict_outputs(faces)
    assert set(exported) == {"expression", "affect"}
    for name in expected:
        assert exported[name].shape == expected[name].shape
        np.testing.assert_allclose(exported[name], expected[name], atol=1e-4, err_msg=name)
