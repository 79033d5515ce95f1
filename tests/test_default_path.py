"""The paths users take without choosing anything: the README's two commands at the default face
size, and a training split too large for the RAM budget, strongly augmented in the reader threads."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import h5py
import pytest
from mlflow.tracking import MlflowClient

from conftest import TEST_PER_CLASS, TRAIN_PER_CLASS, train_config

REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_preprocess_then_train_at_the_default_face_size(synthetic_root, tmp_path):
    """preprocess.py then train.py with no face size, model or augmentation chosen: 96 px faces,
    and the default CNN's stem halves them first (stem_stride null -> 2 from 80 px)."""
    import keras

    data = [f"paths.root={tmp_path}", f"dataset.root={synthetic_root}",
            f"dataset.train_per_class={TRAIN_PER_CLASS}", f"dataset.test_per_class={TEST_PER_CLASS}"]
    for script, extra in (("preprocess.py", []),
                          ("train.py", ["trainer.epochs=1", "trainer.steps_per_epoch=3", "logger.run_name=default"])):
        result = subprocess.run([sys.executable, script, *data, *extra], cwd=REPOSITORY, capture_output=True,
                                text=True, timeout=900)
        assert result.returncode == 0, f"{script}: {result.stderr[-3000:]}"
    [cache_path] = (tmp_path / "caches").glob("*.h5")
    assert cache_path.name == "synthetic-gray96-basic5.h5"
    with h5py.File(cache_path) as cache:
        assert cache["faces"].shape[1:] == (96, 96, 1)
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()],
                               filter_string="attributes.run_name = 'default'")
    assert run.info.status == "FINISHED" and "test/accuracy" in run.data.metrics
    assert run.data.params["model.target"] == "build_simple_cnn" and run.data.params["cache.size"] == "96"
    [kept] = (tmp_path / "runs").glob("*/best.keras")
    model = keras.models.load_model(kept, compile=False)
    assert model.input_shape == (None, 96, 96, 1)
    first_conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert first_conv.strides == (2, 2)


def test_a_streamed_training_split_strongly_augmented_in_the_reader_threads(built_cache, caplog):
    from affectexp.tasks.train import train

    cfg = train_config(built_cache[1], ["trainer.ram_budget_mb=0", "augmentation=strong", "trainer.augment_workers=0",
                                        "trainer.epochs=2", "trainer.steps_per_epoch=3", "logger.run_name=streamed"])
    with caplog.at_level(logging.INFO, logger="affectexp.training.inputs"):
        train(cfg)
    streamed = [r.getMessage() for r in caplog.records if "over the RAM budget" in r.getMessage()]
    assert any(message.startswith("train split") for message in streamed), streamed
    client = MlflowClient(cfg.logger.tracking_uri)
    experiment = client.get_experiment_by_name(cfg.logger.experiment_name)
    [run] = client.search_runs([experiment.experiment_id], filter_string="attributes.run_name = 'streamed'")
    assert run.info.status == "FINISHED"
    assert run.data.params["augmentation.name"] == "strong" and run.data.params["trainer.augment_workers"] == "0"
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert sorted(m.step for m in history) == [1, 2]
