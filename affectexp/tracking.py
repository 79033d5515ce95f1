"""MLflow tracking: where runs go, what a run records, and resuming an interrupted run."""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

log = logging.getLogger(__name__)

RUN_ID_FILE = "mlflow_run_id"
PARAMS_PER_BATCH = 100  # MLflow's limit per log_params call


def flatten_params(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> {"model.widths": "[32, 64, 128]", "optimizer.lr": "0.001", ...}.

    Lists are written as JSON so that every run of a sweep has the same keys.
    """
    flat: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten_params(value, name + "."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple, Mapping)) else str(value)
    return flat


def absolute_tracking_uri(tracking_uri: str) -> str:
    """A relative sqlite:/// store made absolute, so the printed UI command works from anywhere."""
    prefix = "sqlite:///"
    if tracking_uri.startswith(prefix) and not tracking_uri[len(prefix):].startswith("/"):
        return prefix + str(Path(tracking_uri[len(prefix):]).resolve())
    return tracking_uri


def configure(tracking_uri: str, experiment_name: str, artifact_location: str) -> str:
    """Point MLflow at the store and return the experiment's id, creating it if needed.

    A local artifact location is made absolute, so `mlflow ui` finds the artifacts from
    any working directory.
    """
    mlflow.set_tracking_uri(absolute_tracking_uri(tracking_uri))
    experiment = mlflow.get_experiment_by_name(experiment_name)
    if experiment is not None:
        return experiment.experiment_id
    location = artifact_location
    if "://" not in location:
        location = Path(location).resolve().as_uri()
    return mlflow.create_experiment(experiment_name, artifact_location=location)


@contextmanager
def tracked_run(experiment_id: str, run_name: str | None, work_dir: Path) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that continues the run recorded in `work_dir` if the last attempt was cut off.

    The run ends FINISHED on success and FAILED on any exception; only a finished run forgets
    its id, so rerunning an interrupted command keeps logging into the same run.
    """
    id_file = work_dir / RUN_ID_FILE
    run_id = id_file.read_text().strip() if id_file.exists() else None
    if run_id and not _run_exists(run_id):
        run_id = None
    if run_id:
        log.info("Resuming MLflow run %s", run_id)
    with mlflow.start_run(run_id=run_id, experiment_id=None if run_id else experiment_id,
                          run_name=None if run_id else run_name) as run:
        work_dir.mkdir(parents=True, exist_ok=True)
        id_file.write_text(run.info.run_id)
        yield run
    id_file.unlink(missing_ok=True)


def _run_exists(run_id: str) -> bool:
    try:
        MlflowClient().get_run(run_id)
        return True
    except mlflow.exceptions.MlflowException:
        return False


def log_params(params: Mapping[str, str]) -> None:
    """Log params in batches; a value longer than MLflow's limit goes to params/long.json instead."""
    short = {k: v for k, v in params.items() if len(v) <= MAX_PARAM_VAL_LENGTH}
    long = {k: v for k, v in params.items() if k not in short}
    items = list(short.items())
    for start in range(0, len(items), PARAMS_PER_BATCH):
        mlflow.log_params(dict(items[start:start + PARAMS_PER_BATCH]))
    if long:
        mlflow.log_dict(long, "params/long.json")


def log_json(data: Any, artifact_path: str) -> None:
    mlflow.log_dict(data, artifact_path)


@contextmanager
def artifact_dir() -> Iterator[Path]:
    """A scratch folder whose files are logged as artifacts on exit."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder)
        yield path
        mlflow.log_artifacts(str(path))


def ui_command(tracking_uri: str) -> str:
    """The command that opens the MLflow UI on this store."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri}"
    return f"mlflow ui --backend-store-uri {absolute_tracking_uri(tracking_uri)}"
