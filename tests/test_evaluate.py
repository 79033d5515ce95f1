"""evaluate.py: any saved model on any cache, classes matched by name, logged to MLflow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from conftest import compose_config, synthetic_overrides

AFFECTNET8 = ["neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt"]
REPOSITORY = Path(__file__).resolve().parents[1]


def evaluate_config(cache_cfg, overrides: list[str]):
    return compose_config("evaluate", Path(cache_cfg.paths.root),
                          ["cache.size=48", f"cache.path={cache_cfg.cache.path}", *overrides])


def evaluation_run(cfg, run_name: str):
    client = MlflowClient(cfg.logger.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.logger.experiment_name)
    [run] = client.search_runs([experiment.experiment_id], filter_string=f"attributes.run_name = '{run_name}'")
    return run


def test_a_logged_model_reevaluated_from_its_run_reproduces_its_test_metrics(trained):
    from affectexp.tasks.evaluate import evaluate

    _, train_cfg, train_run = trained
    cfg = evaluate_config(train_cfg, [f"model_uri=runs:/{train_run.info.run_id}/model",
                                      "logger.run_name=reevaluated"])
    assert evaluate(cfg) == pytest.approx(train_run.data.metrics["test/accuracy"], abs=1e-6)
    run = evaluation_run(cfg, "reevaluated")
    assert run.info.status == "FINISHED" and run.data.tags["affectexp.task"] == "evaluate"
    for metric in ("test/accuracy", "test/balanced_accuracy", "test/macro_f1", "test/f1/anger"):
        assert run.data.metrics[metric] == pytest.approx(train_run.data.metrics[metric], abs=1e-6)
    artifacts = {a.path for a in MlflowClient(cfg.logger.tracking_uri).list_artifacts(run.info.run_id)}
    assert {"test_confusion_matrix.png", "test_metrics.json"} <= artifacts


def test_evaluate_py_says_in_one_line_which_cache_to_build(tmp_path):
    result = subprocess.run([sys.executable, "evaluate.py", f"paths.root={tmp_path}", "model_uri=model.keras",
                             "cache.size=64"], cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 1
    assert "does not exist; build it with: python preprocess.py dataset=synthetic" in output
    assert "Traceback" not in output


def test_a_missing_cache_of_another_size_than_the_model_s_names_the_model_s(trained, tmp_path):
    """cache.size left at its default (96 px) for a 48 px model: the size to pass is the model's."""
    import mlflow

    from affectexp.data.cache import CacheError
    from affectexp.tasks.evaluate import evaluate

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/another.db")  # as a new process: the run is in logger's store

    _, train_cfg, train_run = trained
    uri = f"runs:/{train_run.info.run_id}/model"
    cfg = compose_config("evaluate", tmp_path, [f"model_uri={uri}", f"logger.tracking_uri={train_cfg.logger.tracking_uri}"])
    with pytest.raises(CacheError, match=rf"^cache.path: {cfg.cache.path} does not exist; {uri} takes 48 px gray "
                                         r"faces: pass cache.size=48 cache.color=gray"):
        evaluate(cfg)


def eight_class_model(model, five: list[str]):
    """The 5-class model's probabilities placed in AffectNet's 8-class order (anger at 6, not 4):
    a model whose head covers 8 classes, as one trained on AffectNet's 8 would. Contempt, a class
    the cache lacks, gets 55% of every face's probability: kept as a possible prediction it wins
    every face, while among the shared classes the order (and the accuracy) is the 5-class model's."""
    import keras

    placement = np.zeros((len(five), len(AFFECTNET8)), dtype=np.float32)
    for row, name in enumerate(five):
        placement[row, AFFECTNET8.index(name)] = 0.45
        placement[row, AFFECTNET8.index("contempt")] = 0.55
    spread = keras.layers.Dense(len(AFFECTNET8), use_bias=False, trainable=False, name="to_affectnet8")
    probabilities = spread(model.get_layer("expression").output)
    spread.set_weights([placement])
    return keras.Model(model.input, probabilities)


@pytest.mark.parametrize("restrict", [True, False])
def test_an_8_class_model_is_evaluated_on_a_5_class_cache_by_class_name(trained, tmp_path, restrict):
    import mlflow

    from affectexp.inference.model import FaceModel, load_face_model, log_face_model
    from affectexp.tasks.evaluate import evaluate

    _, train_cfg, train_run = trained
    mlflow.set_tracking_uri(train_cfg.logger.tracking_uri)
    five = load_face_model(f"runs:/{train_run.info.run_id}/model")
    with mlflow.start_run(experiment_id=train_run.info.experiment_id, run_name="affectnet8 model"):
        model_uri = log_face_model(FaceModel(eight_class_model(five.keras_model, five.class_names), AFFECTNET8,
                                             five.face_spec))
    run_name = f"cross restrict={restrict}"
    cfg = evaluate_config(train_cfg, [f"model_uri={model_uri}", f"restrict_to_cache_classes={restrict}",
                                      f"logger.run_name='{run_name}'"])
    accuracy = evaluate(cfg)
    run = evaluation_run(cfg, run_name)
    if restrict:
        assert accuracy == pytest.approx(train_run.data.metrics["test/accuracy"], abs=1e-6)
        assert run.data.metrics["test/f1/anger"] == pytest.approx(train_run.data.metrics["test/f1/anger"], abs=1e-6)
        assert "test/f1/contempt" not in run.data.metrics
    else:  # contempt stays a choice, and the most probable one: every face is wrong
        assert accuracy == 0.0 and run.data.metrics["test/f1/contempt"] == 0.0


def test_classes_are_matched_by_name():
    from affectexp.training.evaluation import match_classes

    match = match_classes(AFFECTNET8, ["happy", "anger", "pain"])
    assert match.names == ["happy", "anger"]
    np.testing.assert_array_equal(match.label_map, [0, 1, -1])  # "pain" faces are left out
    np.testing.assert_array_equal(match.columns, [1, 6])
    probabilities = np.eye(8, dtype=np.float32)[[1, 6, 4, 0]]  # happy, anger, fear, neutral
    y_true, y_pred = match.apply(np.array([0, 1, 1, 2]), probabilities)
    np.testing.assert_array_equal(y_true, [0, 1, 1])
    np.testing.assert_array_equal(y_pred, [0, 1, 0])  # "fear" is not a choice: the best shared class wins


def test_no_class_in_common_is_a_clear_error():
    from affectexp.training.evaluation import ClassMismatch, match_classes

    with pytest.raises(ClassMismatch, match="no class in common"):
        match_classes(["cat", "dog"], AFFECTNET8)


def test_faces_of_another_size_are_refused_with_the_cache_to_use(trained, tmp_path):
    import mlflow

    from affectexp.errors import UserInputError
    from affectexp.inference.model import load_face_model
    from affectexp.training.evaluation import check_face_shape

    _, train_cfg, train_run = trained
    mlflow.set_tracking_uri(train_cfg.logger.tracking_uri)
    model = load_face_model(f"runs:/{train_run.info.run_id}/model").keras_model
    with pytest.raises(UserInputError, match="cache.size=48 cache.color=gray"):
        check_face_shape(model, (96, 96, 1), "other.h5")


def test_evaluate_on_a_cache_of_another_face_size_stops_before_a_run(trained, synthetic_root, tmp_path):
    """What the user runs: evaluate() on a 32 px cache with a 48 px model."""
    from affectexp.tasks.preprocess import run_preprocess
    from affectexp.errors import UserInputError
    from affectexp.tasks.evaluate import evaluate

    _, train_cfg, train_run = trained
    small = compose_config("preprocess", tmp_path, [*synthetic_overrides(synthetic_root), "cache.size=32"])
    run_preprocess(small)
    cfg = compose_config("evaluate", Path(train_cfg.paths.root), [
        f"cache.path={small.cache.path}", f"model_uri=runs:/{train_run.info.run_id}/model",
        "logger.run_name=wrong_size"])
    with pytest.raises(UserInputError, match="faces are \\(32, 32, 1\\) but the model takes \\(48, 48, 1\\).*cache.size=48"):
        evaluate(cfg)
    client = MlflowClient(cfg.logger.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.logger.experiment_name)
    assert not client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'wrong_size'")


def test_a_cache_cut_otherwise_than_the_model_s_faces_is_evaluated_with_a_warning(trained, synthetic_root, tmp_path,
                                                                                  caplog):
    """Another margin is allowed (it can be the experiment), and said: it costs accuracy."""
    from affectexp.tasks.evaluate import evaluate
    from affectexp.tasks.preprocess import run_preprocess

    _, train_cfg, train_run = trained
    wider = compose_config("preprocess", tmp_path, [*synthetic_overrides(synthetic_root), "faces.margin=0.2"])
    run_preprocess(wider)
    cfg = evaluate_config(train_cfg, [f"model_uri=runs:/{train_run.info.run_id}/model", "logger.run_name=margin",
                                      f"cache.path={wider.cache.path}"])
    with caplog.at_level("WARNING", logger="affectexp"):
        evaluate(cfg)
    assert "faces were cut otherwise than the model's training faces: faces.margin=0.2 (the model's: 0.0)" \
        in caplog.text
