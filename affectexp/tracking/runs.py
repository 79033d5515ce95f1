"""Runs: starting one, or continuing the one an interrupted attempt left, under an explicit parent."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

RUN_ID_FILE = "mlflow_run_id"
SWEEP_TAG = "affectexp.sweep_id"
JOB_TAG = "affectexp.job_name"  # the batch job (SageMaker training or processing job) a run ran in


def job_tags(job_name: str | None) -> dict[str, str]:
    """The tags that record logger.job_name (none when it is unset)."""
    return {JOB_TAG: job_name} if job_name else {}


@dataclass(frozen=True)
class Parent:
    """What a child run belongs to, passed down by whoever started it (a sweep, a search):
    the parent run's id, the child's run name and the tags the child carries."""

    run_id: str
    child_name: str
    tags: Mapping[str, str] = field(default_factory=dict)


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
def tracked_run(experiment_id: str, run_name: str | None, work_dir: Path | None, parent: Parent | None = None,
                system_metrics: bool = False, tags: Mapping[str, str] | None = None) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that continues work_dir's recorded run (recorded_run), else a new one,
    named `run_name` (or the parent's name for it), a child of `parent` when given, carrying
    `tags` (and the parent's). work_dir None: a run that is never continued (an evaluation).
    system_metrics: MLflow samples CPU, memory, disk and GPU use into `system/*` metrics.

    The run ends FINISHED on success and FAILED on any exception; its id stays recorded in
    work_dir, so rerunning the same command continues (or, once finished, finds) this run.
    A run handed to this process by `mlflow run` (MLFLOW_RUN_ID) is the new run: MLflow's
    start_run takes it.
    """
    parent_run_id = parent.run_id if parent else None
    previous = recorded_run(work_dir, parent_run_id) if work_dir is not None else None
    all_tags = {**(parent.tags if parent else {}), **(tags or {})}
    if previous is not None:
        log.info("Continuing MLflow run %s (%s)", previous.info.run_id, previous.info.run_name)
        arguments = {"run_id": previous.info.run_id, "tags": all_tags}
    else:
        arguments = {"experiment_id": experiment_id, "run_name": run_name or (parent.child_name if parent else None),
                     "parent_run_id": parent_run_id, "tags": all_tags}
    # A search's trials start while the search's own run is active.
    with mlflow.start_run(**arguments, nested=mlflow.active_run() is not None,
                          log_system_metrics=system_metrics) as run:
        if work_dir is not None:
            Path(work_dir).mkdir(parents=True, exist_ok=True)
            (Path(work_dir) / RUN_ID_FILE).write_text(run.info.run_id)
        yield run
