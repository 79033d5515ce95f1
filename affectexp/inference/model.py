"""A trained model as it is shipped: the Keras model, its class names and how its faces are cut
out, logged as one MLflow model (Keras flavor, so also pyfunc: `mlflow.pyfunc.load_model`,
`mlflow models serve`) and loaded back from any model URI.

The face spec (size, colour, margin, square, alignment, out-of-bounds rule: everything
preprocessing used) travels in the logged model's metadata, so that inference crops a photo's
face exactly as the training cache did. The signature says what the model takes and gives:
uint8 faces (-1, H, W, C) in, class probabilities (-1, K) out, in the order of `class_names`;
a model with valence and arousal (conf/head/) gives them as (-1, 2) too, and its metadata's
"outputs" names what it gives.
"""

from __future__ import annotations

import importlib.metadata
import logging
import tempfile
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path

import keras
import mlflow
import numpy as np
from mlflow.models import Model, ModelSignature
from mlflow.types.schema import Schema, TensorSpec

from affectexp.data.faces import FaceSpec
from affectexp.errors import UserInputError
from affectexp.models.layers import head_outputs, head_predictions

log = logging.getLogger(__name__)

# The logged model's name within its run: runs:/<run id>/model.
MODEL_NAME = "model"
# What MLflow's pyfunc loader imports to predict, pinned to the versions that trained the model.
# Listed here rather than inferred: MLflow infers them by loading the model in a subprocess,
# about 8 s per logged model (measured).
_REQUIREMENTS = ("mlflow", "keras", "tensorflow", "numpy")
# The forms of model_uri every task accepts, for error messages.
URI_FORMS = "runs:/<run id>/model, models:/<name>@<alias>, models:/<name>/<version>, or a .keras file"


# The columns of the "affect" output.
AFFECT_COLUMNS = ("valence", "arousal")


@dataclass(frozen=True)
class FaceModel:
    """A Keras model taking uint8 faces and giving class probabilities and/or valence and
    arousal (its `outputs`), with what it needs to be used: class_names (the probabilities'
    columns, None when a bare .keras file does not say) and face_spec (how its faces are cut
    from a photo, None likewise)."""

    keras_model: keras.Model
    class_names: list[str] | None
    face_spec: FaceSpec | None

    @property
    def face_shape(self) -> tuple[int, int, int]:
        return tuple(self.keras_model.input_shape[1:])

    @property
    def name(self) -> str:
        return self.keras_model.name

    @property
    def outputs(self) -> tuple[str, ...]:
        """"expression" (class probabilities) and/or "affect" (valence, arousal)."""
        return head_outputs(self.keras_model)

    def predict_outputs(self, faces: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
        """{output: float32 array} of uint8 faces (n, H, W, C): "expression" (n, K) class
        probabilities, "affect" (n, 2) valence and arousal (AFFECT_COLUMNS)."""
        if len(faces) == 0:
            output = self.keras_model.output
            tensors = output if isinstance(output, dict) else {self.outputs[0]: output}
            return {name: np.zeros((0, tensor.shape[-1]), np.float32) for name, tensor in tensors.items()}
        return head_predictions(self.keras_model, self.keras_model.predict(faces, batch_size=batch_size, verbose=0))

    def predict(self, faces: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class probabilities (n, K) float32 of uint8 faces (n, H, W, C)."""
        if "expression" not in self.outputs:
            raise UserInputError(f"the model {self.name} predicts valence and arousal, no class probabilities")
        return self.predict_outputs(faces, batch_size)["expression"]


def signature(face_shape: tuple[int, int, int], num_classes: int,
              outputs: tuple[str, ...] = ("expression",)) -> ModelSignature:
    """uint8 faces (-1, H, W, C) named "faces" in; out, float32 probabilities (-1, K) for an
    expression-only model, else each output by its name: "expression" (-1, K), "affect" (-1, 2)."""
    inputs = Schema([TensorSpec(np.dtype(np.uint8), (-1, *face_shape), "faces")])
    if tuple(outputs) == ("expression",):
        return ModelSignature(inputs=inputs,
                              outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes), "probabilities")]))
    widths = {"expression": num_classes, "affect": len(AFFECT_COLUMNS)}
    return ModelSignature(inputs=inputs, outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, widths[name]), name)
                                                         for name in outputs]))


def pip_requirements() -> list[str]:
    """The installed versions of what loading the model for prediction needs."""
    requirements = []
    for package in _REQUIREMENTS:
        try:
            requirements.append(f"{package}=={importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:  # e.g. tensorflow-cpu installed instead
            requirements.append(package)
    return requirements


def log_face_model(model: FaceModel, registered_name: str | None = None) -> str:
    """Log `model` to the active MLflow run as MODEL_NAME, registered as `registered_name` if
    given; returns its model URI (models:/<model id>).

    What is logged is an uncompiled copy: prediction needs no optimizer, and loading a compiled
    model would need the training loss's class (training/losses.py) wherever it is loaded.
    """
    if model.class_names is None or model.face_spec is None:
        raise ValueError("a logged model needs its class names and face spec")
    keras_model = model.keras_model
    # .output, not .outputs: a model of several outputs keeps giving them by name (a dict).
    uncompiled = keras.Model(keras_model.inputs, keras_model.output, name=keras_model.name)
    metadata = {"class_names": list(model.class_names), "face_spec": asdict(model.face_spec),
                "outputs": list(model.outputs)}
    if "affect" in model.outputs:
        metadata["affect_columns"] = list(AFFECT_COLUMNS)
    info = mlflow.keras.log_model(
        uncompiled, name=MODEL_NAME, signature=signature(model.face_shape, len(model.class_names), model.outputs),
        metadata=metadata, pip_requirements=pip_requirements(), registered_model_name=registered_name)
    return info.model_uri


def logged_model_uri(run_id: str) -> str | None:
    """The URI of the model a run logged (models:/<model id>), or None if it logged none.

    A run continued after a kill asks this before logging its model: it is logged once.
    """
    run = mlflow.get_run(run_id)
    found = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id], output_format="list",
                                        filter_string=f"source_run_id = '{run_id}' AND name = '{MODEL_NAME}'")
    return f"models:/{found[0].model_id}" if found else None


def copy_model_files(model_uri: str, folder: str | Path) -> None:
    """Copy the MLflow model at `model_uri` (its MLmodel, data/, requirements) into `folder`
    itself, so that `mlflow.pyfunc.load_model(folder)` and load_face_model(folder) load it:
    a SageMaker training job's model artifact (SM_MODEL_DIR)."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(folder))


def register(model_uri: str, name: str, alias: str | None = None) -> str:
    """Register `model_uri` (models:/<model id>) as a version of `name`, once (a run continued
    after a kill finds its version), and point `alias` at it if given; returns the version."""
    client = mlflow.MlflowClient()
    versions = [v.version for v in client.search_model_versions(f"name = '{name}'") if v.source == model_uri]
    version = versions[0] if versions else mlflow.register_model(model_uri, name).version
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return str(version)


def register_run_model(run_id: str, name: str | None, alias: str | None) -> None:
    """Register the model run `run_id` logged as `name` (logger.register_model; None: do nothing)
    with `alias` (logger.register_alias): a single run's own model, or a sweep's or search's best child's."""
    if not name:
        return
    uri = logged_model_uri(run_id)
    if uri is None:
        raise UserInputError(f"logger.register_model: MLflow run {run_id} logged no model to register (trained "
                             "before runs logged their models); train it again to register it")
    version = register(uri, name, alias)
    log.info("Registered the model of MLflow run %s as %s version %s%s; load it as models:/%s%s", run_id, name,
             version, f" (alias {alias})" if alias else "", name, f"@{alias}" if alias else f"/{version}")


def load_face_model(model_uri: str) -> FaceModel:
    """A FaceModel from an MLflow model URI (runs:/, models:/, a logged model's folder) or a
    .keras file (which carries neither class names nor a face spec). Loaded uncompiled:
    prediction needs no optimizer or loss."""
    path = Path(model_uri)
    if path.suffix == ".keras":
        if not path.is_file():
            raise UserInputError(f"model_uri: {model_uri} does not exist; pass {URI_FORMS}")
        check_keras_archive(path)
        return FaceModel(keras.models.load_model(path, compile=False), None, None)
    # MLflow copies the model's files (from a run, the registry, a server, or a folder) into a
    # folder it leaves behind; once loaded, the model is in memory and the copy goes.
    with tempfile.TemporaryDirectory(prefix="affectexp-model-") as scratch:
        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=scratch))
        except (mlflow.exceptions.MlflowException, OSError) as error:
            message = getattr(error, "message", str(error))
            raise UserInputError(f"model_uri: cannot load {model_uri} ({message}); pass {URI_FORMS}") from None
        if not (local / "MLmodel").is_file():
            raise UserInputError(f"model_uri: {model_uri} is not an MLflow model (no MLmodel file); pass {URI_FORMS}")
        metadata = Model.load(str(local / "MLmodel")).metadata or {}
        keras_model = mlflow.keras.load_model(str(local), load_model_kwargs={"compile": False})
    spec = metadata.get("face_spec")
    return FaceModel(keras_model, metadata.get("class_names"), FaceSpec(**spec) if spec else None)


# The members every archive that Keras 3's model.save writes holds.
KERAS_ARCHIVE_MEMBERS = {"config.json", "metadata.json"}


def check_keras_archive(path: Path) -> None:
    """Refuse, naming the file, a .keras file that is not a saved Keras model.

    Keras itself reports such a file as "File not found", which sends the user looking for
    a file that exists.
    """
    reason = None
    if not zipfile.is_zipfile(path):
        reason = "it is not a zip archive, as every .keras file is (truncated, or another format)"
    else:
        with zipfile.ZipFile(path) as archive:
            absent = KERAS_ARCHIVE_MEMBERS - set(archive.namelist())
        if absent:
            reason = f"its zip archive lacks {', '.join(sorted(absent))}"
    if reason:
        raise UserInputError(f"model_uri: {path} is not a Keras model: {reason}; pass a .keras file that "
                             "train.py or keras' model.save wrote")
