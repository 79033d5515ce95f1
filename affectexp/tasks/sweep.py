"""Hydra sweeps as one MLflow parent run per sweep with one child run per job.

The parent is created before the first job (MlflowSweepCallback.on_multirun_start) and its
id is written to a file in the sweep directory, which every job finds from its own output
directory, whatever launcher runs it and wherever (other processes, SLURM nodes): see
current_sweep_job(). Each job's run is then started as a child (tracking.tracked_run).
"""

from __future__ import annotations

import atexit
import json
import logging
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from affectexp import tracking
from affectexp.errors import REPORTED
from affectexp.inference.model import register_run_model
from affectexp.tasks.names import run_name, sweep_name
from affectexp.training.objectives import objective_metric

log = logging.getLogger(__name__)

PARENT_FILE = "mlflow_parent_run.json"


def swept_keys(config: DictConfig) -> list[str]:
    """The keys a sweep varies: command-line sweeps (a,b / range(...)) and a sweeper's params."""
    parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    keys = [o.key_or_group for o in parsed if o.is_sweep_override()]
    params = OmegaConf.select(config, "hydra.sweeper.params", default=None)
    return keys + [k for k in (params or {}) if k not in keys]


def current_sweep_job(model: str) -> tracking.Parent | None:
    """The sweep parent of the job this process runs (its run named by run_name from `model`
    and the swept values), or None outside a Hydra multirun."""
    if not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN or not hydra_cfg.runtime.output_dir:
        return None
    parent_file = Path(hydra_cfg.runtime.output_dir).parent / PARENT_FILE
    if not parent_file.exists():
        return None
    parent = json.loads(parent_file.read_text())
    name = run_name(model, list(hydra_cfg.overrides.task), parent.get("swept_keys", []))
    return tracking.Parent(parent["run_id"], name, {tracking.SWEEP_TAG: parent["sweep_id"]})


FAILURE_TAG = "affectexp.failure"


class MlflowSweepCallback(Callback):
    """Opens the sweep's parent run, marks it FAILED when a job fails, FINISHED at the end.

    When a job fails the sweeper re-raises and on_multirun_end is never called, so the
    parent's status is settled in on_job_end as well. A job that cannot even start (an
    override Hydra refuses while composing its config, a launcher error) reaches no job
    hook at all: a handler run at the sweep process's exit fails a parent still RUNNING.
    The reason is the parent's FAILURE_TAG.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        from mlflow.tracking import MlflowClient


        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        experiment_id = tracking.configure_logger(config.logger)
        sweep_id = sweep_dir.name
        overrides = " ".join(config.hydra.overrides.task)
        swept = swept_keys(config)
        parent = MlflowClient().create_run(
            experiment_id, run_name=sweep_name(list(config.hydra.overrides.task), swept),
            tags={tracking.SWEEP_TAG: sweep_id, "affectexp.sweep_overrides": overrides,
                  "affectexp.sweep_dir": str(sweep_dir.resolve())},
        )
        (sweep_dir / PARENT_FILE).write_text(json.dumps(
            {"run_id": parent.info.run_id, "sweep_id": sweep_id, "swept_keys": swept}))
        log.info("Sweep %s: MLflow parent run %s", sweep_id, parent.info.run_id)
        self._ended = False
        atexit.register(self._fail_if_unfinished, config)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if job_return.status == JobStatus.FAILED:
            error = job_return._return_value  # return_value would re-raise it
            overrides = " ".join(job_return.overrides or [])
            self._terminate_parent(config, "FAILED", f"job {overrides!r} failed: {type(error).__name__}: {error}")

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._ended = True
        parent_file = Path(str(config.hydra.sweep.dir)) / PARENT_FILE
        if parent_file.exists():
            tracking.configure_logger(config.logger)
            best = tracking.summarise_children(json.loads(parent_file.read_text())["run_id"],
                                               objective_metric(config.trainer.objective))
            if best is not None:
                register_run_model(best.info.run_id, config.logger.register_model, config.logger.register_alias)
        self._terminate_parent(config, "FINISHED")

    def _fail_if_unfinished(self, config: DictConfig) -> None:
        if not self._ended:
            why = (f"a job stopped: {REPORTED[-1]}" if REPORTED
                   else "a job's config could not be composed or launched (Hydra's message is on the console)")
            self._terminate_parent(config, "FAILED", f"the sweep stopped before every job had run: {why}")

    @staticmethod
    def _terminate_parent(config: DictConfig, status: str, reason: str | None = None) -> None:
        """End the parent run with `status` unless it has ended already (the first end is final)."""
        from mlflow.tracking import MlflowClient


        parent_file = Path(str(config.hydra.sweep.dir)) / PARENT_FILE
        if HydraConfig.initialized() and HydraConfig.get().runtime.output_dir:
            parent_file = Path(HydraConfig.get().runtime.output_dir).parent / PARENT_FILE
        if not parent_file.exists():
            return
        tracking.configure_logger(config.logger)
        client = MlflowClient()
        run_id = json.loads(parent_file.read_text())["run_id"]
        if client.get_run(run_id).info.status != "RUNNING":
            return
        if reason:
            client.set_tag(run_id, FAILURE_TAG, reason[:5000])
        client.set_terminated(run_id, status)
