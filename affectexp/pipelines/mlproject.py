"""The MLflow Project's entry points (MLproject): `python -m affectexp.pipelines.mlproject STEP
--overrides "model=resnet cache.size=48"`, STEP one of preprocess, train, evaluate, pipeline.

`mlflow run` starts the command with a run of its own (MLFLOW_RUN_ID) in its store and
experiment (MLFLOW_TRACKING_URI, MLFLOW_EXPERIMENT_ID, from its --experiment-name): the step's
run, or the pipeline's, is that run, so the logger is pointed there (logger.tracking_uri,
logger.experiment_name added after the given overrides).
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex

from affectexp.pipelines.steps import STEPS


def handed_run_overrides(environ=os.environ) -> list[str]:
    """The logger overrides that put the runs where `mlflow run` created its run; [] otherwise."""
    if not environ.get("MLFLOW_RUN_ID") or not environ.get("MLFLOW_TRACKING_URI"):
        return []
    from mlflow.tracking import MlflowClient

    uri = environ["MLFLOW_TRACKING_URI"]
    experiment = MlflowClient(uri).get_run(environ["MLFLOW_RUN_ID"]).info.experiment_id
    name = MlflowClient(uri).get_experiment(experiment).name
    return [f"logger.tracking_uri={uri}", "logger.experiment_name=" + shlex.quote(name).replace('"', '\\"')]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m affectexp.pipelines.mlproject", description=__doc__.split("\n\n")[0])
    parser.add_argument("step", choices=[*STEPS, "pipeline"])
    parser.add_argument("--overrides", default="", help="train.py's Hydra overrides, in one string")
    parser.add_argument("--threshold", type=float, default=0.0,
                        help="pipeline: register the model (logger.register_model) when the evaluated objective "
                             "reaches this")
    parser.add_argument("--model-uri", default="", help="evaluate: the model to evaluate")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    from affectexp.errors import exit_on_interrupt, exit_on_user_error
    from affectexp.tasks.pipeline import run_pipeline, run_step

    overrides = [*shlex.split(args.overrides), *handed_run_overrides()]
    with exit_on_user_error(), exit_on_interrupt():
        if args.step == "pipeline":
            run_pipeline(overrides, args.threshold)
        else:
            run_step(args.step, overrides, args.model_uri or None)


if __name__ == "__main__":
    main()
