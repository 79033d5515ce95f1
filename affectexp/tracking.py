"""MLflow tracking: where runs go, what a run records, and resuming an interrupted run."""

from __future__ import annotations

import fcntl
import json
import logging
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient
from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

from affectexp.errors import UserInputError

log = logging.getLogger(__name__)

RUN_ID_FILE = "mlflow_run_id"
SWEEP_TAG = "affectexp.sweep_id"
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


class TrackingUnreachable(UserInputError):
    """The configured tracking server does not answer."""


def check_reachable(tracking_uri: str, timeout: float = 5.0) -> None:
    """Fail fast, before any training, when an http(s) tracking server does not answer."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    try:
        with urllib.request.urlopen(tracking_uri.rstrip("/") + "/health", timeout=timeout):
            pass
    except (urllib.error.URLError, OSError) as error:
        raise TrackingUnreachable(
            f"logger.tracking_uri: no MLflow server answers at {tracking_uri} ({error}); start it, fix the URI, "
            "or pass logger.offline=true to log to the local store"
        ) from None


def configure_logger(logger_cfg) -> str:
    """configure() from the `logger` config group, falling back to the local store when
    logger.offline is set and the tracking server does not answer."""
    tracking_uri = logger_cfg.tracking_uri
    if logger_cfg.offline:
        try:
            check_reachable(tracking_uri)
        except TrackingUnreachable:
            log.warning("No MLflow server at %s: logging offline to %s", tracking_uri, logger_cfg.offline_uri)
            tracking_uri = logger_cfg.offline_uri
    return configure(tracking_uri, logger_cfg.experiment_name, logger_cfg.artifact_location)


@contextmanager
def _store_lock(tracking_uri: str) -> Iterator[None]:
    """Serialise first contact with a local SQLite store across processes.

    Jobs of a parallel sweep start together; on a new store each would run MLflow's schema
    migrations and create the experiment at once, and all but one fail
    ("table _alembic_tmp_experiments already exists").
    """
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        yield
        return
    lock_path = Path(tracking_uri[len(prefix):] + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def configure(tracking_uri: str, experiment_name: str, artifact_location: str) -> str:
    """Point MLflow at the store and return the experiment's id, creating it if needed.

    Raises TrackingUnreachable for a server that does not answer. A local artifact location
    is made absolute, so `mlflow ui` finds the artifacts from any working directory.
    """
    check_reachable(tracking_uri)
    tracking_uri = absolute_tracking_uri(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    with _store_lock(tracking_uri):
        experiment = mlflow.get_experiment_by_name(experiment_name)
        if experiment is None:
            location = artifact_location
            if "://" not in location:
                location = Path(location).resolve().as_uri()
            experiment_id = mlflow.create_experiment(experiment_name, artifact_location=location)
        else:
            experiment_id = experiment.experiment_id
    # Nested runs (tuner trials) are created in the active experiment, not their parent's.
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


@contextmanager
def tracked_run(experiment_id: str, run_name: str | None, work_dir: Path) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that continues the run recorded in `work_dir` if the last attempt was cut off.

    Inside a Hydra sweep the run is a child of the sweep's parent run, named after the job's
    overrides and tagged with the sweep id (see sweeps.py). The run ends FINISHED on success
    and FAILED on any exception; only a finished run forgets its id, so rerunning an
    interrupted command keeps logging into the same run.
    """
    id_file = work_dir / RUN_ID_FILE
    run_id = id_file.read_text().strip() if id_file.exists() else None
    if run_id and not _run_exists(run_id):
        run_id = None
    if run_id:
        log.info("Resuming MLflow run %s", run_id)
    from affectexp.sweeps import current_sweep_job

    job = current_sweep_job()
    new_run = {}
    if run_id is None:
        new_run = {"experiment_id": experiment_id, "run_name": run_name or (job.run_name if job else None)}
        if job is not None:
            new_run.update(parent_run_id=job.parent_run_id, tags={SWEEP_TAG: job.sweep_id})
    with mlflow.start_run(run_id=run_id, **new_run) as run:
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
