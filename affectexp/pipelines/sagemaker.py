"""The SageMaker Pipeline: preprocess -> train -> evaluate -> (objective reached?) register.

    python -m affectexp.pipelines.sagemaker --role ARN --image URI --s3-prefix s3://bucket/affectexp \\
        --print [--upsert] [train.py overrides: model=resnet cache.size=48 ...]

Every step runs the project's image (the Dockerfile: the project at APP_DIR) with the entry script
as its container entry point; the scripts read their folders, hyperparameters and job names by
SageMaker's contract (pipelines/contract.py). The overrides are the experiment's (train.py's):
the training step gets them as hyperparameters, the processing steps their share
(pipelines/steps.py). The evaluation step reports trainer.objective's split in evaluation.json (a
PropertyFile); the condition compares its metric with the ObjectiveThreshold parameter, then
the model (the training job's model.tar.gz: the logged MLflow model's files) is registered in
the model package group, or the execution fails saying why.

Built offline: every S3 location is given (the SDK would otherwise ask S3 for a default bucket),
nothing local is uploaded (the code is in the image), the SDK's telemetry is off
(SAGEMAKER_USER_CONFIG_OVERRIDE names sagemaker-config.yaml beside this file). With a defaults
file the SDK validates it against its schema at every lookup: building takes about 35 s here.
Only --upsert talks to AWS: it creates or updates the pipeline in the account (credentials needed).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from affectexp.pipelines.steps import StepOverrides, step_overrides

APP_DIR = "/opt/affectexp"  # where the image holds the project: the entry scripts and conf/
PROCESSING = "/opt/ml/processing"
SDK_CONFIG = Path(__file__).with_name("sagemaker-config.yaml")
STEP_NAMES = {"preprocess": "Preprocess", "train": "Train", "evaluate": "Evaluate"}


def hyperparameters(overrides: list[str]) -> dict[str, str]:
    """train.py's overrides as a training job's hyperparameters: {"optimizer.lr": "3e-4", "model": "resnet",
    "~callbacks.x": ""} (contract.hyperparameter_overrides reads them back)."""
    return {key: value for key, _, value in (o.partition("=") for o in overrides)}


def build_pipeline(name: str, role: str, image: str, s3_prefix: str, overrides: list[str], region: str,
                   serving_image: str | None = None, data_uri: str | None = None):
    """The sagemaker.workflow Pipeline (not created in any account: see upsert)."""
    os.environ.setdefault("SAGEMAKER_USER_CONFIG_OVERRIDE", str(SDK_CONFIG))
    # SDK v2 warns once per class that v3 replaces it (README, "Run it as a pipeline", says why v2).
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")
    # The SDK logs which defaults it applied (the telemetry opt-out) to stdout, where --print writes
    # the definition, unless its logger has a handler already: to stderr.
    sdk_config_log = logging.getLogger("sagemaker.config")
    if not sdk_config_log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(name)s %(levelname)s - %(message)s"))
        sdk_config_log.addHandler(handler)
        sdk_config_log.setLevel(logging.INFO)
        sdk_config_log.propagate = False
    import boto3
    from sagemaker.estimator import Estimator
    from sagemaker.inputs import TrainingInput
    from sagemaker.model import Model
    from sagemaker.model_metrics import MetricsSource, ModelMetrics
    from sagemaker.processing import ProcessingInput, ProcessingOutput, Processor
    from sagemaker.workflow.condition_step import ConditionStep
    from sagemaker.workflow.conditions import ConditionGreaterThanOrEqualTo
    from sagemaker.workflow.execution_variables import ExecutionVariables
    from sagemaker.workflow.fail_step import FailStep
    from sagemaker.workflow.functions import Join, JsonGet
    from sagemaker.workflow.model_step import ModelStep
    from sagemaker.workflow.parameters import ParameterFloat, ParameterString
    from sagemaker.workflow.pipeline import Pipeline
    from sagemaker.workflow.pipeline_context import PipelineSession
    from sagemaker.workflow.properties import PropertyFile
    from sagemaker.workflow.steps import ProcessingStep, TrainingStep

    shares: StepOverrides = step_overrides(overrides)
    s3_prefix = s3_prefix.rstrip("/")
    session = PipelineSession(boto_session=boto3.Session(region_name=region))
    data = ParameterString("DataS3Uri", default_value=data_uri or f"{s3_prefix}/data")
    processing_type = ParameterString("ProcessingInstanceType", default_value="ml.c5.2xlarge")
    training_type = ParameterString("TrainingInstanceType", default_value="ml.g5.xlarge")
    experiment = ParameterString("ExperimentName", default_value="affectexp")  # the MLflow experiment
    tracking_uri = ParameterString("TrackingUri", default_value="sqlite:///mlflow.db")  # MLflow server or ARN
    threshold = ParameterFloat("ObjectiveThreshold", default_value=0.5)
    package_group = ParameterString("ModelPackageGroup", default_value=name)
    approval = ParameterString("ModelApprovalStatus", default_value="PendingManualApproval")
    parameters = [data, processing_type, training_type, experiment, tracking_uri, threshold, package_group, approval]

    def where(step: str):  # this execution's S3 folder for a step's output
        return Join(on="/", values=[s3_prefix, ExecutionVariables.PIPELINE_EXECUTION_ID, step])

    logger_args = [Join(on="", values=["logger.tracking_uri=", tracking_uri]),
                   Join(on="", values=["logger.experiment_name=", experiment])]

    def processor(script: str) -> Processor:
        return Processor(role=role, image_uri=image, instance_count=1, instance_type=processing_type,
                         entrypoint=["python", f"{APP_DIR}/{script}"], sagemaker_session=session)

    preprocess = ProcessingStep(STEP_NAMES["preprocess"], step_args=processor("preprocess.py").run(
        inputs=[ProcessingInput(source=data, destination=f"{PROCESSING}/input/dataset", input_name="dataset")],
        outputs=[ProcessingOutput(output_name="cache", source=f"{PROCESSING}/output/cache",
                                  destination=where("cache"))],
        arguments=shares.preprocess))
    cache_uri = preprocess.properties.ProcessingOutputConfig.Outputs["cache"].S3Output.S3Uri

    estimator = Estimator(
        image_uri=image, role=role, instance_count=1, instance_type=training_type, output_path=where("model"),
        hyperparameters={**hyperparameters(shares.train), "logger.tracking_uri": tracking_uri,
                         "logger.experiment_name": experiment},
        container_entry_point=["python", f"{APP_DIR}/train.py"], sagemaker_session=session,
        # /opt/ml/checkpoints, kept in S3: a restarted job resumes its run (pipelines/contract.py).
        checkpoint_s3_uri=where("checkpoints"),
        disable_profiler=True, debugger_hook_config=False)
    train = TrainingStep(STEP_NAMES["train"], step_args=estimator.fit({"cache": TrainingInput(cache_uri)}))
    model_data = train.properties.ModelArtifacts.S3ModelArtifacts

    evaluation = PropertyFile(name="Evaluation", output_name="evaluation", path="evaluation.json")
    evaluate = ProcessingStep(STEP_NAMES["evaluate"], property_files=[evaluation], step_args=processor(
        "evaluate.py").run(
        inputs=[ProcessingInput(source=cache_uri, destination=f"{PROCESSING}/input/cache", input_name="cache"),
                ProcessingInput(source=model_data, destination=f"{PROCESSING}/input/model", input_name="model")],
        outputs=[ProcessingOutput(output_name="evaluation", source=f"{PROCESSING}/output/evaluation",
                                  destination=where("evaluation"))],
        arguments=[*shares.evaluate, *logger_args]))
    evaluation_uri = evaluate.properties.ProcessingOutputConfig.Outputs["evaluation"].S3Output.S3Uri

    model = Model(image_uri=serving_image or image, model_data=model_data, role=role, sagemaker_session=session)
    register = ModelStep("RegisterModel", step_args=model.register(
        content_types=["application/json"], response_types=["application/json"],
        inference_instances=["ml.m5.large", "ml.g5.xlarge"], transform_instances=["ml.m5.large"],
        model_package_group_name=package_group, approval_status=approval,
        model_metrics=ModelMetrics(model_statistics=MetricsSource(
            content_type="application/json", s3_uri=Join(on="/", values=[evaluation_uri, "evaluation.json"])))))
    metric = shares.objective_metric
    objective = JsonGet(step_name=evaluate.name, property_file=evaluation, json_path=metric)
    below = FailStep("ObjectiveBelowThreshold", error_message=Join(on=" ", values=[
        f"evaluated {shares.objective_split} {metric}", objective, "is below ObjectiveThreshold", threshold]))
    check = ConditionStep("CheckObjective", conditions=[ConditionGreaterThanOrEqualTo(left=objective, right=threshold)],
                          if_steps=[register], else_steps=[below])
    return Pipeline(name=name, parameters=parameters, steps=[preprocess, train, evaluate, check],
                    sagemaker_session=session)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m affectexp.pipelines.sagemaker",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="train.py's Hydra overrides (the experiment)")
    parser.add_argument("--name", default="affectexp", help="the pipeline's name (and default model package group)")
    parser.add_argument("--role", required=True, help="the IAM role ARN the jobs run as")
    parser.add_argument("--image", required=True, help="the project's image URI (built from the Dockerfile)")
    parser.add_argument("--serving-image", help="the registered model's inference image (default: --image)")
    parser.add_argument("--s3-prefix", required=True, help="s3://bucket/prefix: the steps' outputs go under it")
    parser.add_argument("--data", help="DataS3Uri's default: the data set (default: <s3-prefix>/data)")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
                        help="the AWS region (default: $AWS_REGION)")
    parser.add_argument("--print", action="store_true", help="write the pipeline definition (JSON) to stdout")
    parser.add_argument("--upsert", action="store_true", help="create or update the pipeline in the account")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from affectexp.errors import exit_on_user_error

    if not args.region:
        parser.error("--region: no region given and AWS_REGION is unset")
    if not args.s3_prefix.startswith("s3://"):
        parser.error(f"--s3-prefix: {args.s3_prefix!r} is not an s3:// URI")
    with exit_on_user_error():
        pipeline = build_pipeline(args.name, args.role, args.image, args.s3_prefix, args.overrides, args.region,
                                  args.serving_image, args.data)
    if args.print:
        json.dump(json.loads(pipeline.definition()), sys.stdout, indent=2)
        sys.stdout.write("\n")
    if args.upsert:
        response = pipeline.upsert(role_arn=args.role)
        print(f"Pipeline {args.name}: {response['PipelineArn']}; start it with "
              f"aws sagemaker start-pipeline-execution --pipeline-name {args.name}", file=sys.stderr)


if __name__ == "__main__":
    main()
