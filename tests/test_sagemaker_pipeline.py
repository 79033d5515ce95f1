"""The SageMaker Pipeline's definition, built offline by the SDK itself: no credentials, every
request to AWS sent to a closed port, telemetry off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("sagemaker")
# The SDK validates its defaults file (the telemetry opt-out) at every lookup: about 35 s a build.
pytestmark = pytest.mark.slow

REPOSITORY = Path(__file__).resolve().parents[1]
ROLE = "arn:aws:iam::123456789012:role/affectexp"
IMAGE = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/affectexp:1"


def offline_env() -> dict[str, str]:
    """No AWS credentials or config anywhere, and every HTTP(S) request sent to a closed port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SAGEMAKER_"))}
    closed = "http://127.0.0.1:9"
    return {**env, "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "AWS_EC2_METADATA_DISABLED": "true", "HTTP_PROXY": closed, "HTTPS_PROXY": closed, "NO_PROXY": ""}


@pytest.fixture(scope="module")
def definition():
    command = [sys.executable, "-m", "affectexp.pipelines.sagemaker", "--role", ROLE, "--image", IMAGE,
               "--s3-prefix", "s3://bucket/affectexp", "--region", "eu-west-1", "--print",
               "experiment=quick48", "model=resnet", "optimizer.lr=3e-4", "num_workers=4"]
    result = subprocess.run(command, cwd=REPOSITORY, env=offline_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    # The SDK's own word that it read the opt-out from the project's defaults file.
    assert "Fetched defaults config from location: " + str(REPOSITORY / "affectexp/pipelines/sagemaker-config.yaml") \
        in result.stderr
    assert "Applied value from config key = SageMaker.PythonSDK.Modules.TelemetryOptOut" in result.stderr
    return json.loads(result.stdout)


def step(definition, name: str) -> dict:
    [found] = [s for s in definition["Steps"] if s["Name"] == name]
    return found


def test_the_steps_and_their_data_dependencies(definition):
    assert [(s["Name"], s["Type"]) for s in definition["Steps"]] == [
        ("Preprocess", "Processing"), ("Train", "Training"), ("Evaluate", "Processing"), ("CheckObjective", "Condition")]
    preprocess, train, evaluate = (step(definition, n)["Arguments"] for n in ("Preprocess", "Train", "Evaluate"))
    [data] = preprocess["ProcessingInputs"]
    assert data["InputName"] == "dataset" and data["S3Input"]["S3Uri"] == {"Get": "Parameters.DataS3Uri"}
    cache_uri = {"Get": "Steps.Preprocess.ProcessingOutputConfig.Outputs['cache'].S3Output.S3Uri"}
    [channel] = train["InputDataConfig"]
    assert channel["ChannelName"] == "cache" and channel["DataSource"]["S3DataSource"]["S3Uri"] == cache_uri
    inputs = {i["InputName"]: i["S3Input"]["S3Uri"] for i in evaluate["ProcessingInputs"]}
    assert inputs == {"cache": cache_uri, "model": {"Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}}
    assert step(definition, "Evaluate")["PropertyFiles"] == [
        {"PropertyFileName": "Evaluation", "OutputName": "evaluation", "FilePath": "evaluation.json"}]
    # The entry scripts in the image, each step's share of the experiment's overrides.
    assert preprocess["AppSpecification"]["ContainerEntrypoint"] == ["python", "/opt/affectexp/preprocess.py"]
    assert preprocess["AppSpecification"]["ContainerArguments"] == [
        "dataset=synthetic", "classes=basic5", "cache.size=48", "cache.color=gray", "num_workers=4"]  # quick48: 48 px
    assert train["AlgorithmSpecification"]["ContainerEntrypoint"] == ["python", "/opt/affectexp/train.py"]
    assert train["HyperParameters"] == {"experiment": "quick48", "model": "resnet", "optimizer.lr": "3e-4",
                                        "logger.tracking_uri": {"Get": "Parameters.TrackingUri"},
                                        "logger.experiment_name": {"Get": "Parameters.ExperimentName"}}
    assert "split=val" in evaluate["AppSpecification"]["ContainerArguments"]  # trainer.objective: val_accuracy
    # The training job's checkpoint folder (its run folders) kept in S3 per execution: a restart resumes.
    assert train["CheckpointConfig"] == {"S3Uri": {"Std:Join": {"On": "/", "Values": [
        "s3://bucket/affectexp", {"Get": "Execution.PipelineExecutionId"}, "checkpoints"]}}}


def test_the_condition_registers_the_model_or_fails(definition):
    check = step(definition, "CheckObjective")["Arguments"]
    [condition] = check["Conditions"]
    assert condition["Type"] == "GreaterThanOrEqualTo"
    assert condition["LeftValue"] == {"Std:JsonGet": {"PropertyFile": {"Get": "Steps.Evaluate.PropertyFiles.Evaluation"},
                                                      "Path": "accuracy"}}
    assert condition["RightValue"] == {"Get": "Parameters.ObjectiveThreshold"}
    [register] = check["IfSteps"]
    assert register["Type"] == "RegisterModel"
    arguments = register["Arguments"]
    assert arguments["ModelPackageGroupName"] == {"Get": "Parameters.ModelPackageGroup"}
    assert arguments["InferenceSpecification"]["Containers"][0]["ModelDataUrl"] == {
        "Get": "Steps.Train.ModelArtifacts.S3ModelArtifacts"}
    assert [s["Type"] for s in check["ElseSteps"]] == ["Fail"]


def test_the_parameters(definition):
    parameters = {p["Name"]: (p["Type"], p["DefaultValue"]) for p in definition["Parameters"]}
    assert parameters == {
        "DataS3Uri": ("String", "s3://bucket/affectexp/data"),
        "ProcessingInstanceType": ("String", "ml.c5.2xlarge"),
        "TrainingInstanceType": ("String", "ml.g5.xlarge"),
        "ExperimentName": ("String", "affectexp"),
        "TrackingUri": ("String", "sqlite:///mlflow.db"),
        "ObjectiveThreshold": ("Float", 0.5),
        "ModelPackageGroup": ("String", "affectexp"),
        "ModelApprovalStatus": ("String", "PendingManualApproval"),
    }
    train = step(definition, "Train")["Arguments"]
    assert train["ResourceConfig"]["InstanceType"] == {"Get": "Parameters.TrainingInstanceType"}

