"""evaluate.py's task: any saved model on a split of any cache, in a new MLflow run.

Classes are matched by name (training/evaluation.py), e.g. a model trained on AffectNet's
8 classes evaluated on a 5-class cache.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import mlflow
from omegaconf import DictConfig

from affectexp import tracking
from affectexp.config import check_values
from affectexp.data.faces import FaceSpec
from affectexp.errors import UserInputError
from affectexp.training.caches import open_cache
from affectexp.inference.model import load_face_model
from affectexp.training.evaluation import check_face_shape, evaluate_and_log, model_classes

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig) -> float:
    """evaluate.py: cfg.model_uri on cfg.split of cfg.cache.path, in a new MLflow run; returns the accuracy."""
    check_values(cfg)
    split = str(cfg.split)
    with open_cache(cfg) as cache:
        face_shape, cache_names, size = cache.face_shape, list(cache.class_names), cache.split_size(split)
        cache_spec = cache.face_spec
    if size == 0:
        raise UserInputError(f"{cfg.cache.path}: the cache has no {split} faces; choose another split")
    experiment_id = tracking.configure_logger(cfg.logger)
    model = load_face_model(cfg.model_uri)
    check_face_shape(model.keras_model, face_shape, cfg.cache.path)
    names = model_classes(model.keras_model, model.class_names, cache_names)
    warn_if_cut_otherwise(model.face_spec, cache_spec, cfg.cache.path)
    run_name = cfg.logger.run_name or f"evaluate {model.name} on {Path(cfg.cache.path).stem}"
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name) as run:
        mlflow.set_tag("affectexp.task", "evaluate")
        tracking.log_params({"model_uri": cfg.model_uri, "cache.path": str(cfg.cache.path), "split": split,
                             "model.classes": json.dumps(names), "cache.classes": json.dumps(cache_names),
                             "restrict_to_cache_classes": str(cfg.restrict_to_cache_classes)})
        metrics = evaluate_and_log(model.keras_model, model.class_names, cfg.cache.path, split, cache_names,
                                   cfg.batch_size, cfg.restrict_to_cache_classes)
        log.info("%s accuracy %.4f, balanced accuracy %.4f, macro-F1 %.4f over %s (MLflow run %s)", split,
                 metrics["accuracy"], metrics["balanced_accuracy"], metrics["macro_f1"], metrics["class_names"],
                 run.info.run_id)
    return metrics["accuracy"]


def warn_if_cut_otherwise(model_spec: FaceSpec | None, cache_spec: FaceSpec, cache_path: str) -> None:
    """Say so when the cache's faces were cut otherwise than the model's training faces (another
    margin, alignment, ...): allowed (that can be the experiment), but it lowers the accuracy."""
    if model_spec is None:
        return
    differing = [f"faces.{key}={value} (the model's: {getattr(model_spec, key)})"
                 for key, value in asdict(cache_spec).items() if getattr(model_spec, key) != value]
    if differing:
        log.warning("%s: its faces were cut otherwise than the model's training faces: %s", cache_path,
                    ", ".join(differing))
