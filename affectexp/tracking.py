"""MLflow tracking: where runs go, what a run records, and resuming an interrupted run."""

from __future__ import annotations

import csv
import fcntl
import io
import json
import logging
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param
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


SQLITE_PREFIX = "sqlite:///"


def sqlite_path(tracking_uri: str) -> str | None:
    """The database file of a local SQLite store's URI; None for any other store."""
    return tracking_uri[len(SQLITE_PREFIX):] if tracking_uri.startswith(SQLITE_PREFIX) else None


def absolute_tracking_uri(tracking_uri: str) -> str:
    """A relative sqlite:/// store made absolute, so the printed UI command works from anywhere."""
    database = sqlite_path(tracking_uri)
    if database is not None and not database.startswith("/"):
        return SQLITE_PREFIX + str(Path(database).resolve())
    return tracking_uri


@dataclass(frozen=True)
class Parent:
    """What a child run belongs to, passed down by whoever started it (a sweep, a search):
    the parent run's id, the child's run name and the tags the child carries."""

    run_id: str
    child_name: str
    tags: Mapping[str, str] = field(default_factory=dict)


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


class StoreUnwritable(UserInputError):
    """The MLflow store cannot be written (a read-only file, folder or file system)."""


def check_writable(tracking_uri: str) -> None:
    """OSError when a local SQLite store's file exists but cannot be opened for writing.

    Reading works on a read-only store, so without this check a run would fail only at
    its first write, with a traceback from deep inside SQLAlchemy.
    """
    database = sqlite_path(tracking_uri)
    if database is not None and Path(database).is_file():
        with open(database, "r+b"):
            pass


@contextmanager
def _store_lock(tracking_uri: str) -> Iterator[None]:
    """Serialise first contact with a local SQLite store across processes.

    Jobs of a parallel sweep start together; on a new store each would run MLflow's schema
    migrations and create the experiment at once, and all but one fail
    ("table _alembic_tmp_experiments already exists").
    """
    database = sqlite_path(tracking_uri)
    if database is None:
        yield
        return
    lock_path = Path(database + ".lock")
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
    try:
        check_writable(tracking_uri)
        with _store_lock(tracking_uri):
            experiment = mlflow.get_experiment_by_name(experiment_name)
            if experiment is None:
                location = artifact_location
                if "://" not in location:
                    location = Path(location).resolve().as_uri()
                experiment_id = mlflow.create_experiment(experiment_name, artifact_location=location)
            else:
                experiment_id = experiment.experiment_id
    except (OSError, mlflow.exceptions.MlflowException) as error:
        reason = getattr(error, "message", None) or str(error)
        raise StoreUnwritable(f"logger.tracking_uri: cannot use the MLflow store {tracking_uri} "
                              f"({reason.splitlines()[0]}); make it writable, or choose another store") from None
    # Nested runs (tuner trials) are created in the active experiment, not their parent's.
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def recorded_run(work_dir: Path, parent_run_id: str | None = None):
    """The MLflow run (mlflow.entities.Run) that work_dir's last attempt logged into, if it
    still exists in this store under the same parent (None: a top-level run); else None.

    A new sweep of the same jobs has a new parent, so its jobs are new runs, not continuations.
    """
    id_file = Path(work_dir) / RUN_ID_FILE
    if not id_file.is_file():
        return None
    try:
        run = MlflowClient().get_run(id_file.read_text().strip())
    except mlflow.exceptions.MlflowException:
        return None
    if run.info.lifecycle_stage != "active" or run.data.tags.get("mlflow.parentRunId") != parent_run_id:
        return None
    return run


@contextmanager
def tracked_run(experiment_id: str, run_name: str | None, work_dir: Path,
                parent: Parent | None = None) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that continues work_dir's recorded run (recorded_run), else a new one,
    named `run_name` (or the parent's name for it), a child of `parent` when given.

    The run ends FINISHED on success and FAILED on any exception; its id stays recorded in
    work_dir, so rerunning the same command continues (or, once finished, finds) this run.
    """
    parent_run_id = parent.run_id if parent else None
    previous = recorded_run(work_dir, parent_run_id)
    if previous is not None:
        log.info("Continuing MLflow run %s (%s)", previous.info.run_id, previous.info.run_name)
        arguments = {"run_id": previous.info.run_id}
    else:
        arguments = {"experiment_id": experiment_id, "run_name": run_name or (parent.child_name if parent else None),
                     "parent_run_id": parent_run_id, "tags": dict(parent.tags) if parent else {}}
    # A search's trials start while the search's own run is active.
    with mlflow.start_run(**arguments, nested=mlflow.active_run() is not None) as run:
        Path(work_dir).mkdir(parents=True, exist_ok=True)
        (Path(work_dir) / RUN_ID_FILE).write_text(run.info.run_id)
        yield run


def log_step_metrics(metrics: Mapping[str, float], step: int) -> None:
    """One step's metrics on the active run, in one batch: the store keeps all of them or none."""
    mlflow.log_metrics(dict(metrics), step=step)


def log_missing_steps(history: list[Mapping[str, float]]) -> None:
    """Log each step of `history` (step = 1-based position) that the active run lacks.

    A step arrives whole or not at all (log_step_metrics), so one metric's history tells
    which steps the run has.
    """
    run_id = mlflow.active_run().info.run_id
    client = MlflowClient()
    logged: dict[str, set[int]] = {}
    for step, metrics in enumerate(history, 1):
        key = min(metrics)
        if key not in logged:
            logged[key] = {metric.step for metric in client.get_metric_history(run_id, key)}
        if step not in logged[key]:
            log_step_metrics(metrics, step)


def log_metrics_once(metrics: Mapping[str, float]) -> None:
    """Log those of `metrics` (step-less: evaluation results) that the active run lacks, so a
    rerun that repeats an evaluation after a kill does not record it twice."""
    run_id = mlflow.active_run().info.run_id
    present = MlflowClient().get_run(run_id).data.metrics
    missing = {name: value for name, value in metrics.items() if name not in present}
    if missing:
        mlflow.log_metrics(missing)


def log_params(params: Mapping[str, str]) -> None:
    """Log params in batches; a value longer than MLflow's limit goes to params/long.json instead."""
    short = {k: v for k, v in params.items() if len(v) <= MAX_PARAM_VAL_LENGTH}
    long = {k: v for k, v in params.items() if k not in short}
    items = list(short.items())
    for start in range(0, len(items), PARAMS_PER_BATCH):
        mlflow.log_params(dict(items[start:start + PARAMS_PER_BATCH]))
    if long:
        mlflow.log_dict(long, "params/long.json")


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


BEST_RUN_TAG = "affectexp.best_run_id"


def summarise_children(parent_run_id: str, objective_metric: str):
    """Make a sweep's or search's parent run show its best child (the highest `objective_metric`
    among the FINISHED children); returns that child (mlflow.entities.Run), or None.

    The parent gets the best child's run id and name (tags), its evaluation metrics under the
    children's own names (so the runs table compares the parent with the runs beside it), its
    values of the params that differ between the children (`best.<key>`, never the base
    config), and leaderboard.csv: every child, best first, with run ids, status, objective,
    test metrics and the differing params.
    """
    client = MlflowClient()
    parent = client.get_run(parent_run_id)
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=50000)
    scored = [c for c in children if c.info.status == "FINISHED" and objective_metric in c.data.metrics]
    if not scored:
        return None
    best = max(scored, key=lambda c: c.data.metrics[objective_metric])
    keys = sorted({key for c in children for key in c.data.params})
    differing = [key for key in keys if len({c.data.params.get(key) for c in children}) > 1]
    evaluation = sorted(k for k in best.data.metrics if k == objective_metric or k.startswith("test_"))
    rows = sorted(children, key=lambda c: -c.data.metrics.get(objective_metric, float("-inf")))
    board = [{"run_id": c.info.run_id, "run_name": c.info.run_name, "status": c.info.status,
              **{k: c.data.metrics.get(k) for k in evaluation}, **{k: c.data.params.get(k) for k in differing}}
             for c in rows]
    client.set_tag(parent_run_id, BEST_RUN_TAG, best.info.run_id)
    client.set_tag(parent_run_id, "affectexp.best_run_name", best.info.run_name)
    client.set_tag(parent_run_id, "affectexp.objective", objective_metric)
    now = int(time.time() * 1000)
    metrics = [Metric(k, best.data.metrics[k], now, 0) for k in evaluation]
    params = [Param(f"best.{k}", best.data.params[k]) for k in differing
              if k in best.data.params and f"best.{k}" not in parent.data.params]  # a param once logged is final
    for start in range(0, max(len(params), 1), PARAMS_PER_BATCH):
        client.log_batch(parent_run_id, metrics=metrics if start == 0 else [],
                         params=params[start:start + PARAMS_PER_BATCH])
    client.log_text(parent_run_id, _csv(board), "leaderboard.csv")
    return best


def _csv(rows: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(dict.fromkeys(name for row in rows for name in row)))
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
