"""Exporting a logged model for phones and servers (TFLite, TensorFlow SavedModel), and running
an exported TFLite model, so that its predictions can be checked against the Keras model's.

Beside the model goes model.json: its outputs, class names (the probabilities' columns) and face
spec (how to cut a face out of a photo), which an app needs as much as the weights. The exported
model takes faces as float32 values 0..255 (N, H, W, C): the uint8 faces of the cache, cast. A
model of several outputs (head=multitask) gives each by its name in the serving signature
("expression", "affect"); a model of one output gives it as "output_0", and model.json says which.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np

from affectexp.inference.model import AFFECT_COLUMNS, FaceModel

# export=<format> -> (what is written in the export folder, Keras' name for the format)
EXPORT_FORMATS = {"tflite": ("model.tflite", "litert"), "saved_model": ("saved_model", "tf_saved_model")}
DESCRIPTION_FILE = "model.json"


def export_model(model: FaceModel, export_format: str, folder: Path) -> Path:
    """Write `model` as `export_format` (EXPORT_FORMATS) with its model.json into `folder`;
    returns the exported model's path. Written beside the folder first and moved in when
    complete: an interrupted export leaves the previous one as it was."""
    name, keras_format = EXPORT_FORMATS[export_format]
    folder = Path(folder)
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    model.keras_model.export(str(partial / name), format=keras_format, verbose=False)
    description = {"format": export_format, "model": name, "input": "float32 faces 0..255, (N, H, W, C)",
                   "face_shape": list(model.face_shape), "outputs": list(model.outputs),
                   "class_names": model.class_names, "affect_columns": list(AFFECT_COLUMNS),
                   "face_spec": asdict(model.face_spec) if model.face_spec else None}
    (partial / DESCRIPTION_FILE).write_text(json.dumps(description, indent=2))
    if folder.exists():
        shutil.rmtree(folder)
    partial.rename(folder)
    return folder / name


class TfliteModel:
    """An exported .tflite model, run by the TFLite interpreter through its serving signature on
    batches of faces (the signature resizes its tensors to each batch)."""

    def __init__(self, path: Path):
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:  # LiteRT is TFLite's successor; TensorFlow's own interpreter still runs
            import tensorflow as tf

            Interpreter = tf.lite.Interpreter
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's notice that LiteRT replaces it
            self.interpreter = Interpreter(model_path=str(path))
        [signature] = self.interpreter.get_signature_list().values()
        self._input = signature["inputs"][0]
        self._runner = self.interpreter.get_signature_runner()
        description = Path(path).with_name(DESCRIPTION_FILE)
        # A single output is exported unnamed: model.json says what it is (a bare file: probabilities).
        self.outputs = tuple(json.loads(description.read_text())["outputs"]) if description.is_file() else ("expression",)

    def predict_outputs(self, faces: np.ndarray) -> dict[str, np.ndarray]:
        """{output: float32 array} of uint8 faces (n, H, W, C), as FaceModel.predict_outputs
        gives them: "expression" (n, K) probabilities, "affect" (n, 2) valence and arousal."""
        given = self._runner(**{self._input: faces.astype(np.float32)})
        if len(given) == 1:
            given = {self.outputs[0]: next(iter(given.values()))}
        return {name: np.array(value, dtype=np.float32) for name, value in given.items()}

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """Class probabilities (n, K) float32 of uint8 faces (n, H, W, C)."""
        return self.predict_outputs(faces)["expression"]
