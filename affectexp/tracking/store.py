"""Where runs go: the MLflow store (a local SQLite file or a server) and its experiment."""

from __future__ import annotations

import fcntl
import logging
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

import mlflow

from affectexp.errors import ConfigError, UserInputError

log = logging.getLogger(__name__)

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
    """configure() from the `logger` config group's values (a LoggerConfig; tracking imports
    nothing above it), falling back to the local store when
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
    # MLflow 3 refuses its file store, in a paragraph ("databricks" is a store's name, not a folder)
    if urlparse(tracking_uri).scheme in ("", "file") and tracking_uri != "databricks":
        folder = tracking_uri.removeprefix("file://")
        raise ConfigError(f"logger.tracking_uri: {tracking_uri} is a folder (MLflow's file store, which "
                          f"MLflow 3 refuses); pass a store: sqlite:///{folder.rstrip('/')}/mlflow.db, "
                          "or a server's http://host:port")
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


def ui_command(tracking_uri: str) -> str:
    """The command that opens the MLflow UI on this store."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"open {tracking_uri}"
    return f"mlflow ui --backend-store-uri {absolute_tracking_uri(tracking_uri)}"
