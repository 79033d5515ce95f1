"""SageMaker's container contract, read onto the existing config keys.

Inside a SageMaker job, preprocess.py, train.py and evaluate.py find their inputs and outputs where
SageMaker puts them, and turn them into Hydra overrides placed before the command line's own (which
therefore win): the one place that knows SageMaker's folders and variables. Outside SageMaker
(none of them present) nothing is added.

| SageMaker | config key |
|---|---|
| processing input `dataset` (preprocess) | `dataset.root` |
| processing output `cache` (preprocess), input `cache` (evaluate) | `paths.cache_dir` |
| processing input `model` (evaluate): an MLflow model folder or the training job's model.tar.gz | `model_uri` |
| processing output `evaluation` (evaluate) | `report_dir` (evaluation.json, metrics.json, plots) |
| `SM_CHANNEL_CACHE` (or `SM_CHANNEL_TRAINING`), `<root>/input/data/cache` | `paths.cache_dir` (train) |
| `SM_MODEL_DIR`, `<root>/model` | `model_dir` (train: the logged model's files) |
| `SM_OUTPUT_DATA_DIR`, `<root>/output/data` | `report_dir` (train: metrics.json, plots) |
| `<root>/input/config/hyperparameters.json`, else `SM_HPS`, else `SM_HP_<KEY>` | one override per hyperparameter |
| `TRAINING_JOB_NAME`, the processing job's `ProcessingJobName` | `logger.job_name` (the runs' tag) |
| `<root>/checkpoints`, when the job has one (the estimator's `checkpoint_s3_uri`) | `paths.runs_dir` (train) |

SageMaker copies the checkpoint folder to S3 while a training job runs and back onto the
instance that restarts it (a spot interruption, a retried step): with the run folders there
(resume state, MLflow run id), the restarted train.py continues the same MLflow run from its
last committed epoch, as a rerun after a kill does.

A processing job's folders are named in `<root>/config/processingjobconfig.json` (its inputs'
and outputs' names and local paths), as SageMaker Processing writes it for every job. `<root>` is
/opt/ml, or $AFFECTEXP_SAGEMAKER_ROOT.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tarfile
import tempfile
from collections.abc import Mapping
from pathlib import Path

from affectexp.errors import ConfigError, UserInputError

ROOT_ENV = "AFFECTEXP_SAGEMAKER_ROOT"
DEFAULT_ROOT = "/opt/ml"

# Processing jobs: the names the pipeline gives its inputs and outputs -> the config keys they set.
PROCESSING_INPUTS = {"preprocess": {"dataset": "dataset.root"},
                     "evaluate": {"cache": "paths.cache_dir", "model": "model_uri"}}
PROCESSING_OUTPUTS = {"preprocess": {"cache": "paths.cache_dir"}, "evaluate": {"evaluation": "report_dir"}}
# Training jobs: the channel holding the cache; "training" is the SDK's name for fit("s3://...")'s one channel.
CACHE_CHANNELS = ("cache", "training")
# Hyperparameters SageMaker itself adds (the SDK's framework estimators, automatic model tuning): not config.
SAGEMAKER_OWN = ("sagemaker_", "_tuning_objective_metric")
# The tasks that log MLflow runs (preprocess logs none), hence take logger.job_name.
TRACKED_TASKS = ("train", "evaluate")

PLAIN_VALUE = re.compile(r"[\w/.:@+\-]+")


def sagemaker_root(environ: Mapping[str, str] = os.environ) -> Path:
    return Path(environ.get(ROOT_ENV, DEFAULT_ROOT))


def override(key: str, value: str) -> str:
    """`key=value` as Hydra parses it back to the same string (quoted unless plainly a word or path)."""
    if PLAIN_VALUE.fullmatch(value):
        return f"{key}={value}"
    return f"{key}='" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def container_overrides(task: str, environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The Hydra overrides SageMaker's contract gives `task` (preprocess, train or evaluate) in
    this process's job, each with where it comes from ({override: origin}, in order); {} outside
    SageMaker. UserInputError naming the file or variable when what SageMaker left is unreadable."""
    root = sagemaker_root(environ)
    if task == "train":
        return training_overrides(root, environ)
    return processing_overrides(task, root)


def processing_overrides(task: str, root: Path) -> dict[str, str]:
    config_file = root / "config" / "processingjobconfig.json"
    if not config_file.is_file():
        return {}
    job = read_json(config_file)
    folders = {item.get("InputName"): item.get("S3Input", {}).get("LocalPath")
               for item in job.get("ProcessingInputs") or []}
    outputs = {item.get("OutputName"): item.get("S3Output", {}).get("LocalPath")
               for item in (job.get("ProcessingOutputConfig") or {}).get("Outputs") or []}
    overrides = {}
    for kind, names, keys in (("input", folders, PROCESSING_INPUTS.get(task, {})),
                              ("output", outputs, PROCESSING_OUTPUTS.get(task, {}))):
        for name, key in keys.items():
            if names.get(name):
                value = model_folder(Path(names[name])) if key == "model_uri" else names[name]
                overrides[override(key, str(value))] = f"the processing {kind} {name!r} in {config_file}"
    if task in TRACKED_TASKS and job.get("ProcessingJobName"):
        overrides[override("logger.job_name", job["ProcessingJobName"])] = f"ProcessingJobName in {config_file}"
    return overrides


def model_folder(folder: Path) -> Path:
    """The MLflow model in a processing input: the folder itself when it holds MLmodel, else the
    model.tar.gz a training job leaves (its model artifact: SM_MODEL_DIR's files), extracted."""
    if (folder / "MLmodel").is_file():
        return folder
    archive = folder / "model.tar.gz"
    if not archive.is_file():
        raise UserInputError(f"{folder}: the processing input 'model' holds neither an MLflow model (MLmodel) nor "
                             "a training job's model.tar.gz; pass the training step's model artifact")
    target = Path(tempfile.mkdtemp(prefix="affectexp-model-"))
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")  # "data": no absolute paths, links or devices
    return target


def training_overrides(root: Path, environ: Mapping[str, str]) -> dict[str, str]:
    hyperparameters_file = root / "input" / "config" / "hyperparameters.json"
    in_job = ("TRAINING_JOB_NAME" in environ or hyperparameters_file.is_file()
              or any(name.startswith("SM_") for name in environ))
    if not in_job:
        return {}
    overrides = {}
    for channel in CACHE_CHANNELS:
        variable = f"SM_CHANNEL_{channel.upper()}"
        folder = environ.get(variable) or root / "input" / "data" / channel
        if Path(folder).is_dir():
            overrides[override("paths.cache_dir", str(folder))] = f"the training channel {channel!r}"
            break
    for key, variable, default in (("model_dir", "SM_MODEL_DIR", root / "model"),
                                   ("report_dir", "SM_OUTPUT_DATA_DIR", root / "output" / "data")):
        overrides[override(key, environ.get(variable) or str(default))] = variable
    if environ.get("TRAINING_JOB_NAME"):
        overrides[override("logger.job_name", environ["TRAINING_JOB_NAME"])] = "TRAINING_JOB_NAME"
    if (root / "checkpoints").is_dir():
        overrides[override("paths.runs_dir", str(root / "checkpoints"))] = "the job's checkpoint folder"
    values, source = hyperparameters(hyperparameters_file, environ)
    overrides.update({text: f"a hyperparameter ({source})" for text in hyperparameter_overrides(values, source)})
    return overrides


def hyperparameters(hyperparameters_file: Path, environ: Mapping[str, str]) -> tuple[dict, str]:
    """(the job's hyperparameters, where they were read): the file SageMaker writes, else the
    training toolkit's SM_HPS (JSON) or SM_HP_<KEY> variables (upper-cased by it: read lower-case)."""
    if hyperparameters_file.is_file():
        return read_json(hyperparameters_file), str(hyperparameters_file)
    if environ.get("SM_HPS"):
        try:
            return json.loads(environ["SM_HPS"]), "SM_HPS"
        except json.JSONDecodeError as error:
            raise UserInputError(f"SM_HPS: not JSON ({error})") from None
    found = {name[len("SM_HP_"):].lower(): value for name, value in environ.items() if name.startswith("SM_HP_")}
    return found, "SM_HP_* variables"


def hyperparameter_overrides(values: dict, source: str) -> list[str]:
    """One Hydra override per hyperparameter (`optimizer.lr: "3e-4"` -> optimizer.lr=3e-4), each
    checked by Hydra's parser; ConfigError naming the hyperparameter and `source` otherwise.

    SageMaker passes every value as a string; the SDK's framework estimators JSON-encode them
    first ('"3e-4"'), which is undone once.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    if not isinstance(values, dict):
        raise ConfigError(f"{source}: hyperparameters must be a JSON object of config keys and values")
    parser = OverridesParser.create()
    overrides = []
    for key, value in values.items():
        if key.startswith(SAGEMAKER_OWN):
            continue
        value = hyperparameter_value(value)
        text = key if key.startswith("~") and not value else f"{key}={value}"  # ~key: a deletion
        try:
            parser.parse_override(text)
        except HydraException as error:
            reason = str(error).strip().splitlines()[0]
            raise ConfigError(f"hyperparameter {key!r} ({source}): {text!r} is not a config override ({reason}); "
                              "give a config key and its value as on the command line, e.g. optimizer.lr: 3e-4") \
                from None
        overrides.append(text)
    return overrides


def hyperparameter_value(value) -> str:
    if isinstance(value, str):
        if len(value) >= 2 and value[0] == value[-1] == '"':
            try:
                decoded = json.loads(value)
            except json.JSONDecodeError:
                return value
            return decoded if isinstance(decoded, str) else value
        return value
    return json.dumps(value)


def check_composes(task: str, config_dir: Path, overrides: dict[str, str], command_line: list[str]) -> None:
    """ConfigError naming the first of `overrides` ({override: origin}) that the entry config
    `task` (composed with the command line's own arguments) refuses: an unknown key, a value of
    the wrong type, an unknown option of a group. Hydra's own message would not say where the
    value came from."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    def refusal(attempt: list[str]) -> str | None:
        try:
            with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
                compose(task, overrides=attempt)
        except (HydraException, OmegaConfBaseException) as error:
            return " ".join(str(error).split())
        return None

    if refusal([*overrides, *command_line]) is None:
        return
    for given, origin in overrides.items():  # only on failure: which one
        reason = refusal([given, *command_line])
        if reason is not None:
            raise ConfigError(f"{given}, from {origin}: refused ({reason}); fix or remove it there")


def read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UserInputError(f"{path}: cannot read it as JSON ({error})") from None


def use_container_contract(task: str, config_dir: str | Path, argv: list[str] | None = None) -> None:
    """For the entry scripts, before Hydra composes: put the SageMaker job's overrides into
    sys.argv (or `argv`) ahead of the command line's own; nothing outside SageMaker. A bad
    override is one line naming it and exit status 1."""
    from affectexp.errors import exit_on_user_error

    argv = sys.argv if argv is None else argv
    with exit_on_user_error():
        overrides = container_overrides(task)
        if not overrides:
            return
        check_composes(task, Path(config_dir), overrides, argv[1:])
    argv[1:1] = list(overrides)
