"""predict.py's task: a logged model on photos, folders, videos or an AffectNet-style list, one
output row per face (its class probabilities, and its valence and arousal for a model with
those outputs); or the model exported (export=tflite|saved_model).

Faces in photos and video frames are found by the configured detector (conf/detector/) and cut
out with the model's own face spec (data/faces.cut_face, as preprocessing cut the training
faces); a list's faces are cut at its boxes by load_face, exactly as in the cache. Faces go to
the model in batches. Inputs that cannot be read are counted and listed beside the output,
never fatal.
"""

from __future__ import annotations

import csv
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import mlflow
import numpy as np
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from affectexp.config import PredictConfig, check_values
from affectexp.data.affectnet_layout import NOT_ANNOTATED
from affectexp.data.faces import FaceError, FaceSpec, cut_face, expand_box, eye_line_angle
from affectexp.data.labels import canonical_name, expression_code_of_name
from affectexp.errors import ConfigError, UserInputError
from affectexp.inference.detectors import FaceDetector
from affectexp.inference.export import export_model
from affectexp.inference.inputs import (VIDEO_SUFFIXES, Frame, Unreadable, check_inputs, default_images_dir, frames,
                                        input_files, is_annotation_list, listed_faces, relative_source)
from affectexp.inference.model import AFFECT_COLUMNS, URI_FORMS, FaceModel, load_face_model
from affectexp.training.metrics import affect_metrics

log = logging.getLogger(__name__)


@dataclass
class FoundFace:
    """A face ready for the model, and where it was found."""

    box: tuple[float, float, float, float]
    score: float  # the detector's; NaN for a list's box
    face: np.ndarray


@dataclass
class Image:
    """A photo, a video frame or a list row, with the faces found in it (best first)."""

    source: str
    frame: int
    faces: list[FoundFace]
    true_class: str = ""  # a list's label, or the photo's folder when it is named after an expression
    row: str = ""  # <list file>:<line> for a list's face
    true_affect: tuple[float, float] | None = None  # a list's valence and arousal (NOT_ANNOTATED where none)
    pixels: np.ndarray | None = None  # RGB, kept only to be rendered


@dataclass
class Tally:
    """What a prediction run saw, for its closing summary."""

    images: int = 0  # photos and video frames read
    faceless: int = 0  # of those, the ones in which the detector found no face
    faces: int = 0
    unreadable: list[Unreadable] = field(default_factory=list)
    labelled: int = 0  # photos (or list rows) with a true class the model knows
    correct: int = 0  # of those, the ones whose best face is predicted as that class
    affect_true: list[tuple[float, float]] = field(default_factory=list)  # of those, a list's valence and arousal
    affect_predicted: list[np.ndarray] = field(default_factory=list)  # and its face's predicted ones


def predict(cfg: DictConfig) -> int:
    """predict.py: returns the number of faces written (or 0 after an export)."""
    check_values(cfg)
    config: PredictConfig = OmegaConf.to_object(cfg)
    inputs = check_inputs(config.inputs) if config.export is None else None
    mlflow.set_tracking_uri(config.logger.tracking_uri)
    model = load_face_model(config.model_uri)
    if model.class_names is None or model.face_spec is None:
        raise UserInputError(f"model_uri: {config.model_uri} is a bare Keras file, which says neither its classes "
                             f"nor how its faces were cut out; pass {URI_FORMS.rsplit(', or', 1)[0]}")
    if config.export is not None:
        path = export_model(model, str(config.export), Path(config.export_dir) / str(config.export))
        log.info("Exported %s as %s: %s (class names and face spec in model.json beside it)", config.model_uri,
                 config.export, path)
        return 0
    detector = None if is_annotation_list(inputs) else instantiate(cfg.detector)
    if detector is not None and not isinstance(detector, FaceDetector):
        raise ConfigError(f"detector: {cfg.detector._target_} is not a FaceDetector (affectexp/inference/detectors.py)")
    tally = Tally()
    started = time.perf_counter()
    output = Path(config.output)
    written = write_predictions(output, model, found_faces(inputs, config, model.face_spec, detector, tally), config,
                                tally)
    report(tally, model.outputs, output, inputs, time.perf_counter() - started)
    if not written:
        first = tally.unreadable[0]
        hint = ("pass images_dir=<the folder the list's paths are relative to>" if detector is None
                else "pass photos or videos OpenCV can read")
        raise UserInputError(f"inputs: none of the {len(tally.unreadable)} inputs of {inputs} could be read (the first: "
                             f"{first.source}: {first.reason}); {hint}; {output} was left as it was")
    return tally.faces


def found_faces(inputs: Path, config: PredictConfig, spec: FaceSpec, detector: FaceDetector | None,
                tally: Tally) -> Iterator[Image]:
    """Each photo or frame with the faces the detector found in it, or each list row with its face."""
    if detector is None:
        images_dir = Path(config.images_dir) if config.images_dir else default_images_dir(inputs)
        for item in listed_faces(inputs, images_dir, spec):
            if isinstance(item, Unreadable):
                tally.unreadable.append(item)
                continue
            tally.images += 1
            yield Image(item.source, 0, [FoundFace(item.box, math.nan, item.face)], item.true_class, item.row,
                        true_affect=item.true_affect)
        return
    for item in frames(input_files(inputs), config.video.every_n_frames):
        if isinstance(item, Unreadable):
            tally.unreadable.append(item)
            continue
        tally.images += 1
        faces = detected_faces(item, detector, spec)
        tally.faceless += not faces
        yield Image(item.source, item.frame, faces, folder_class(item.source, inputs),
                    pixels=item.image if config.render else None)


def detected_faces(frame: Frame, detector: FaceDetector, spec: FaceSpec) -> list[FoundFace]:
    """The detector's faces in one photo or frame, best score first, each cut by the model's spec
    (turned to level eyes when the spec aligns and the detector gives eye positions)."""
    image = frame.image if spec.color == "rgb" else cv2.cvtColor(frame.image, cv2.COLOR_RGB2GRAY)
    found = []
    for detection in sorted(detector.detect(frame.image), key=lambda d: -d.score):
        angle = eye_line_angle(*detection.eyes) if spec.align and detection.eyes is not None else None
        try:
            face = cut_face(image, expand_box(detection.box, spec.margin, spec.square), spec, angle)
        except FaceError:  # a box with less than 2 pixels inside the image
            continue
        found.append(FoundFace(tuple(map(float, detection.box)), float(detection.score), face))
    return found


def folder_class(source: str, inputs: Path) -> str:
    """The expression a photo's folder is named after (happy/001.jpg), when inputs is a folder
    tree of that kind: photos labelled this way are scored, detection misses counted wrong."""
    if not inputs.is_dir():
        return ""
    name = Path(source).parent.name
    return canonical_name(name) if expression_code_of_name(name) >= 0 else ""


def write_predictions(output: Path, model: FaceModel, images: Iterator[Image], config: PredictConfig,
                      tally: Tally) -> bool:
    """Predict the faces in batches of config.batch_size (per image when rendering) and write
    one CSV row per face; the file appears complete or not at all (written beside, then renamed).
    When no input could be read at all the output is left as it was: returns whether it was written."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    names = model.class_names
    affect = "affect" in model.outputs
    columns = ["source", "frame", "face", "x", "y", "w", "h", "score",
               *(["predicted", "confidence", *(f"p_{name}" for name in names)] if "expression" in model.outputs
                 else []),
               *(AFFECT_COLUMNS if affect else ()), "true_class", "row",
               *(f"true_{column}" for column in (AFFECT_COLUMNS if affect else ()))]
    root = Path(config.inputs)
    renderer = Renderer(Path(config.render_dir), root) if config.render else None
    try:
        with open(partial, "w", newline="") as handle, tqdm(unit=" faces", desc="predict", mininterval=1.0) as bar:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for batch in batches(images, 1 if renderer else config.batch_size):
                faces = [face.face for image in batch for face in image.faces]
                predicted = model.predict_outputs(np.stack(faces), config.batch_size) if faces else {}
                start = 0
                for image in batch:
                    scored = {name: values[start:start + len(image.faces)] for name, values in predicted.items()}
                    start += len(image.faces)
                    score_labelled(image, scored, names, tally)
                    source = relative_source(image.source, root)
                    truth = [] if not affect else ["" if value is None or value == NOT_ANNOTATED else f"{value:.5f}"
                                                   for value in image.true_affect or (None, None)]
                    for index, face in enumerate(image.faces):
                        writer.writerow([source, image.frame, index, *(f"{v:.1f}" for v in face.box),
                                         f"{face.score:.4f}", *prediction_cells(scored, index, names),
                                         image.true_class, image.row, *truth])
                    if renderer:
                        renderer.add(image, scored, names)
                tally.faces += len(faces)
                bar.update(len(faces))
        if tally.unreadable and not tally.images:
            return False
        os.replace(partial, output)
        return True
    finally:
        partial.unlink(missing_ok=True)
        if renderer:
            renderer.close()


def prediction_cells(scored: dict[str, np.ndarray], index: int, names: list[str]) -> list[str]:
    """One face's predicted class, its confidence and every class's probability (a model with
    the "expression" output), then its valence and arousal (one with "affect"), as CSV cells."""
    cells = []
    if "expression" in scored:
        p = scored["expression"][index]
        cells += [names[int(p.argmax())], f"{p.max():.4f}", *(f"{v:.5f}" for v in p)]
    if "affect" in scored:
        cells += [f"{v:.5f}" for v in scored["affect"][index]]
    return cells


def face_label(scored: dict[str, np.ndarray], index: int, names: list[str]) -> str:
    """What a rendered photo says beside a face: "happy 0.92", "v +0.41 a -0.12", or both."""
    parts = []
    if "expression" in scored:
        p = scored["expression"][index]
        parts.append(f"{names[int(p.argmax())]} {p.max():.2f}")
    if "affect" in scored:
        valence, arousal = scored["affect"][index]
        parts.append(f"v {valence:+.2f} a {arousal:+.2f}")
    return " ".join(parts)


def batches(images: Iterator[Image], faces_per_batch: int) -> Iterator[list[Image]]:
    """Whole images grouped until they hold at least faces_per_batch faces (or the inputs end)."""
    batch, count = [], 0
    for image in images:
        batch.append(image)
        count += len(image.faces)
        if count >= faces_per_batch:
            yield batch
            batch, count = [], 0
    if batch:
        yield batch


def score_labelled(image: Image, scored: dict[str, np.ndarray], names: list[str], tally: Tally) -> None:
    """Count a labelled photo (or list row) whose class the model knows: correct when its best
    face is predicted as that class, wrong when it is not, or when no face was found in it. A
    list row's valence and arousal are kept beside its face's predicted ones."""
    if image.true_class not in names:
        return
    tally.labelled += 1
    if "expression" in scored:
        tally.correct += bool(image.faces) and names[int(scored["expression"][0].argmax())] == image.true_class
    if "affect" in scored and image.true_affect is not None and image.faces:
        tally.affect_true.append(image.true_affect)
        tally.affect_predicted.append(scored["affect"][0])


class Renderer:
    """Writes each photo with boxes and predictions drawn into render_dir (same relative path),
    and each video's sampled frames as <name>.mp4 there."""

    def __init__(self, folder: Path, root: Path):
        self.folder, self.root = folder, root
        self.videos: dict[str, cv2.VideoWriter] = {}

    def add(self, image: Image, scored: dict[str, np.ndarray], names: list[str]) -> None:
        if image.pixels is None:  # a list row: there is no photo to draw on
            return
        drawn = cv2.cvtColor(image.pixels, cv2.COLOR_RGB2BGR)
        thickness = max(1, round(min(drawn.shape[:2]) / 200))
        for index, face in enumerate(image.faces):
            x, y, w, h = (int(round(v)) for v in face.box)
            cv2.rectangle(drawn, (x, y), (x + w, y + h), (0, 255, 0), thickness)
            label = face_label(scored, index, names)
            scale = max(0.4, w / 200)
            (text_w, text_h), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
            top = max(y - text_h - 4, 0)
            cv2.rectangle(drawn, (x, top), (x + text_w + 4, top + text_h + 4), (0, 255, 0), -1)
            cv2.putText(drawn, label, (x + 2, top + text_h + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thickness)
        target = self.folder / relative_source(image.source, self.root)
        if Path(image.source).suffix.lower() in VIDEO_SUFFIXES:
            self._video(target.with_suffix(".mp4"), drawn).write(drawn)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(target.with_suffix(".jpg")), drawn)

    def _video(self, path: Path, frame: np.ndarray) -> cv2.VideoWriter:
        if str(path) not in self.videos:
            path.parent.mkdir(parents=True, exist_ok=True)
            height, width = frame.shape[:2]
            self.videos[str(path)] = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (width, height))
        return self.videos[str(path)]

    def close(self) -> None:
        for writer in self.videos.values():
            writer.release()


def report(tally: Tally, outputs: tuple[str, ...], output: Path, inputs: Path, seconds: float) -> None:
    """The closing summary (accuracy, and CCC and RMSE of valence and arousal, on labelled
    inputs the model's outputs can be scored on); unreadable inputs listed in <output>.unreadable.csv."""
    rate = tally.faces / seconds if seconds > 0 else float("nan")
    log.info("%d faces in %d photos or frames (%d without a face found), %.1f faces/s: %s", tally.faces,
             tally.images, tally.faceless, rate, output)
    if tally.labelled and "expression" in outputs:
        log.info("Accuracy on %d labelled inputs (a photo whose face was not found counts as wrong): %.4f",
                 tally.labelled, tally.correct / tally.labelled)
    if tally.affect_true:
        metrics = affect_metrics(np.array(tally.affect_true), np.array(tally.affect_predicted), NOT_ANNOTATED)
        log.info("Valence and arousal on %d and %d annotated list rows: CCC %s and %s, RMSE %s and %s",
                 metrics["annotated_valence"], metrics["annotated_arousal"],
                 *(f"{metrics[key]:.4f}" if key in metrics else "-"
                   for key in ("ccc_valence", "ccc_arousal", "rmse_valence", "rmse_arousal")))
    listing = output.with_name(output.stem + ".unreadable.csv")
    if tally.unreadable:
        with open(listing, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["source", "reason"])
            writer.writerows([relative_source(u.source, inputs), u.reason] for u in tally.unreadable)
        log.warning("%d inputs could not be read (listed in %s), e.g. %s: %s", len(tally.unreadable), listing,
                    tally.unreadable[0].source, tally.unreadable[0].reason)
    else:
        listing.unlink(missing_ok=True)
