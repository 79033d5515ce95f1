"""MLflow tracking, depending on nothing of the project above it (a run's parent is passed in).

store: where runs go; runs: starting or continuing a run; params: what a run records of its
config; metrics: metric names and exactly-once logging; artifacts: files and data-set
inputs; parents: a sweep's or search's run summarising its children.
"""

from affectexp.tracking.artifacts import artifact_dir, copy_run_report, log_cache_input
from affectexp.tracking.metrics import (EVALUATION_PREFIX, TRAIN_SECONDS, epoch_metric_name, evaluation_metric_name,
                                        log_epoch_metrics, log_metrics_once, log_missing_epochs)
from affectexp.tracking.params import flatten_params, log_config_params, log_params, run_params
from affectexp.tracking.parents import BEST_RUN_TAG, summarise_children
from affectexp.tracking.runs import JOB_TAG, RUN_ID_FILE, SWEEP_TAG, Parent, job_tags, recorded_run, tracked_run
from affectexp.tracking.store import (StoreUnwritable, TrackingUnreachable, absolute_tracking_uri, check_reachable,
                                      check_writable, configure, configure_logger, sqlite_path, ui_command)

__all__ = [
    "BEST_RUN_TAG", "EVALUATION_PREFIX", "JOB_TAG", "RUN_ID_FILE", "SWEEP_TAG", "TRAIN_SECONDS", "Parent", "StoreUnwritable",
    "TrackingUnreachable", "absolute_tracking_uri", "artifact_dir", "check_reachable", "check_writable", "configure",
    "configure_logger", "copy_run_report", "epoch_metric_name", "evaluation_metric_name", "flatten_params", "job_tags", "log_cache_input",
    "log_config_params", "log_epoch_metrics", "log_metrics_once", "log_missing_epochs", "log_params", "recorded_run",
    "run_params", "sqlite_path", "summarise_children", "tracked_run", "ui_command",
]
