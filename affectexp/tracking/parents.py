"""Parent runs (a sweep's, a search's) that summarise their children."""

from __future__ import annotations

import csv
import io
import time

from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from affectexp.tracking.metrics import EVALUATION_PREFIX
from affectexp.tracking.params import PARAMS_PER_BATCH

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
    test_prefix = EVALUATION_PREFIX["test"] + "/"
    evaluation = sorted(k for k in best.data.metrics if k == objective_metric or k.startswith(test_prefix))
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
