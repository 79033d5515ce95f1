"""evaluate.py's task: any saved model on a split of any cache, in a new MLflow run.

Classes are matched by name (training/evaluation.py), e.g. a model trained on AffectNet's
8 classes evaluated on a 5-class cache.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from affectexp import tracking
from affectexp.config import EvaluateConfig, check_values
from affectexp.data.affectnet_layout import NOT_ANNOTATED
from affectexp.data.cache import CacheError, FaceCache
from affectexp.data.faces import FaceSpec
from affectexp.errors import UserInputError
from affectexp.training.caches import open_cache
from affectexp.inference.model import load_face_model
from affectexp.models.layers import head_outputs
from affectexp.training.evaluation import check_face_shape, describe, evaluate_and_log, model_classes

log = logging.getLogger(__name__)


def evaluate(cfg: DictConfig, parent: tracking.Parent | None = None) -> float:
    """evaluate.py: cfg.model_uri on cfg.split of cfg.cache.path, in a new MLflow run (a child of
    `parent` when given: a pipeline's step); returns the accuracy (the valence CCC for a model
    without class probabilities)."""
    check_values(cfg)
    settings: EvaluateConfig = OmegaConf.to_object(cfg)
    with open_model_cache(settings) as cache:
        return evaluate_on_cache(settings, cache, parent)


def open_model_cache(settings: EvaluateConfig) -> FaceCache:
    """The configured cache. Where it does not exist and the model takes faces of another size or
    colour than cache.size and cache.color say (their defaults, 96 px gray, when not given), the
    error names the model's: the cache to build is the one the model can be evaluated on."""
    try:
        return open_cache(settings)
    except CacheError as missing:
        if Path(settings.cache.path).exists():
            raise
        try:
            tracking.configure_logger(settings.logger)  # the store that runs:/ and models:/ URIs name
            spec = load_face_model(settings.model_uri).face_spec
        except UserInputError:  # a model_uri that does not load either: the cache's error comes first
            raise missing from None
        if spec is None or (spec.size, spec.color) == (settings.cache.size, str(settings.cache.color)):
            raise
        raise CacheError(f"cache.path: {settings.cache.path} does not exist; {settings.model_uri} takes "
                         f"{spec.size} px {spec.color} faces: pass cache.size={spec.size} cache.color={spec.color} "
                         "(with cache.path where that cache is not at its default path)") from None


def evaluate_on_cache(settings: EvaluateConfig, cache: FaceCache, parent: tracking.Parent | None = None) -> float:
    split, cache_path = str(settings.split), settings.cache.path
    if cache.split_size(split) == 0:
        raise UserInputError(f"{cache_path}: the cache has no {split} faces; choose another split")
    experiment_id = tracking.configure_logger(settings.logger)
    model = load_face_model(settings.model_uri)
    check_face_shape(model.keras_model, cache.face_shape, cache_path)
    outputs = head_outputs(model.keras_model)
    if "expression" not in outputs and not np.any(cache.affect(split) != NOT_ANNOTATED):
        raise UserInputError(f"{cache_path}: no {split} face has valence or arousal annotated, and the model "
                             "predicts nothing else; evaluate it on a cache of a data set that annotates them (AffectNet)")
    names = model_classes(model.keras_model, model.class_names, cache.class_names) if "expression" in outputs else []
    warn_if_cut_otherwise(model.face_spec, cache.face_spec, cache_path)
    run_name = settings.logger.run_name or f"evaluate {model.name} on {Path(cache_path).stem}"
    tags = {"affectexp.task": "evaluate", **tracking.job_tags(settings.logger.job_name)}
    with tracking.tracked_run(experiment_id, run_name, None, parent, tags=tags) as run:
        tracking.log_params({"model_uri": settings.model_uri, "cache.path": str(cache_path), "split": split,
                             "model.outputs": json.dumps(list(outputs)), "model.classes": json.dumps(names),
                             "cache.classes": json.dumps(cache.class_names),
                             "restrict_to_cache_classes": str(settings.restrict_to_cache_classes)})
        metrics = evaluate_and_log(model.keras_model, model.class_names, cache, split, settings.batch_size,
                                   settings.restrict_to_cache_classes)
        over = f" over {metrics['class_names']}" if "class_names" in metrics else ""
        log.info("%s %s%s (MLflow run %s)", split, describe(metrics), over, run.info.run_id)
        if settings.report_dir:
            write_report(settings, metrics, run.info.run_id)
    return metrics["accuracy"] if "accuracy" in metrics else metrics.get("ccc_valence", math.nan)


def write_report(settings: EvaluateConfig, metrics: dict, run_id: str) -> None:
    """report_dir: the run's files and metrics (tracking.copy_run_report) and evaluation.json,
    {"split", "model_uri", "run_id"} and every scalar of the evaluation ("evaluated_faces",
    "accuracy", "macro_f1", ... "ccc_valence" for a model that predicts it): what a pipeline's
    condition step reads."""
    tracking.copy_run_report(run_id, settings.report_dir)
    scalars = {name: value for name, value in metrics.items() if isinstance(value, (int, float))}
    report = {"split": str(settings.split), "model_uri": settings.model_uri, "run_id": run_id, **scalars}
    (Path(settings.report_dir) / "evaluation.json").write_text(json.dumps(report, indent=2))


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
