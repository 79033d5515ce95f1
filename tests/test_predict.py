"""Using a trained model: predict.py on lists, photos, folders and videos, serving and export.

Every test uses the shared training run's logged model (48 px gray, 5 classes) and the shared
synthetic data set, whose photos have known face boxes.
"""

from __future__ import annotations

import csv
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from affectexp.data.cache import FaceCache

REPOSITORY = Path(__file__).resolve().parents[1]
LISTS = "Manually_Annotated_file_lists"
IMAGES = "Manually_Annotated_Images"
PHOTOS = 40  # photos of the test list copied into a folder for detection


def run_predict(cfg, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "predict.py", f"paths.root={cfg.paths.root}",
                           f"logger.tracking_uri={cfg.logger.tracking_uri}", *overrides],
                          cwd=REPOSITORY, capture_output=True, text=True, timeout=600)


def rows_of(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def list_rows(synthetic_root: Path) -> list[dict]:
    return rows_of(synthetic_root / LISTS / "validation.csv")


@pytest.fixture(scope="module")
def model_uri(trained):
    return f"runs:/{trained[2].info.run_id}/model"


@pytest.fixture(scope="module")
def photo_folder(synthetic_root, tmp_path_factory):
    """(folder, {photo name: known box}) of PHOTOS photos of the test list, in class folders
    named by their expression (so predict.py scores them), plus one file that is not a photo."""
    from affectexp.data.labels import AFFECTNET_EXPRESSIONS

    folder = tmp_path_factory.mktemp("photos")
    boxes = {}
    for row in list_rows(synthetic_root)[:PHOTOS]:
        name = AFFECTNET_EXPRESSIONS[int(row["expression"])]
        target = folder / name / Path(row["subDirectory_filePath"]).name
        target.parent.mkdir(exist_ok=True)
        shutil.copy(synthetic_root / IMAGES / row["subDirectory_filePath"], target)
        boxes[f"{name}/{target.name}"] = tuple(float(row[k]) for k in ("face_x", "face_y", "face_width", "face_height"))
    (folder / "notes.jpg").write_text("not a photo")
    return folder, boxes


def test_a_list_s_faces_are_the_cache_s_faces_byte_for_byte(trained, model_uri, synthetic_root):
    import mlflow

    from affectexp.inference.inputs import ListedFace, listed_faces
    from affectexp.inference.model import load_face_model

    _, cfg, _ = trained
    mlflow.set_tracking_uri(cfg.logger.tracking_uri)
    spec = load_face_model(model_uri).face_spec
    with FaceCache(cfg.cache.path) as cache:
        start, stop = cache.split_ranges["test"]
        cached = dict(zip((r.decode() for r in cache.file["source_row"][start:stop]), cache.faces[start:stop]))
    listed = [f for f in listed_faces(synthetic_root / LISTS / "validation.csv", synthetic_root / IMAGES, spec)
              if isinstance(f, ListedFace)]
    assert len(listed) >= len(cached)  # the list also holds classes the 5-class cache leaves out
    for face in listed:
        if face.row in cached:
            np.testing.assert_array_equal(face.face, cached.pop(face.row), err_msg=face.row)
    assert not cached, f"{len(cached)} cached faces not in the list"


def test_loading_a_logged_model_leaves_no_copy_of_it_behind(trained, model_uri, tmp_path, monkeypatch):
    import tempfile

    import mlflow

    from affectexp.inference.model import load_face_model

    mlflow.set_tracking_uri(trained[1].logger.tracking_uri)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where MLflow and tempfile put their copies
    model = load_face_model(model_uri)
    assert model.predict(np.zeros((1, *model.keras_model.input_shape[1:]), np.uint8)).shape == (1, len(model.class_names))
    assert not list(scratch.iterdir())


def test_predict_py_on_the_test_list_reproduces_the_run_s_test_accuracy(trained, model_uri, synthetic_root, tmp_path):
    _, cfg, run = trained
    output = tmp_path / "faces.csv"
    result = run_predict(cfg, f"model_uri={model_uri}", f"inputs={synthetic_root / LISTS / 'validation.csv'}",
                         f"images_dir={synthetic_root / IMAGES}", f"output={output}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = rows_of(output)
    known = [r for r in rows if r["true_class"] in cfg.classes.names]
    with FaceCache(cfg.cache.path) as cache:
        assert len(known) == cache.split_size("test")
    accuracy = np.mean([r["predicted"] == r["true_class"] for r in known])
    assert accuracy == pytest.approx(run.data.metrics["test/accuracy"], abs=1e-9)
    assert f"Accuracy on {len(known)} labelled inputs" in result.stdout + result.stderr
    probabilities = np.array([[float(r[f"p_{n}"]) for n in cfg.classes.names] for r in rows])
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-4)


def test_a_list_in_affectnet_s_layout_finds_its_images_and_a_list_of_none_leaves_the_output(
        trained, model_uri, synthetic_root, tmp_path):
    """Without images_dir, a list in Manually_Annotated_file_lists/ reads its paths from the
    Manually_Annotated_Images/ beside it. A list none of whose images can be read stops in one
    line naming images_dir, and the output from before is left as it was."""
    _, cfg, _ = trained
    output = tmp_path / "faces.csv"
    result = run_predict(cfg, f"model_uri={model_uri}", f"inputs={synthetic_root / LISTS / 'validation.csv'}",
                         f"output={output}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = rows_of(output)
    assert len(rows) == len(list_rows(synthetic_root)) and not output.with_name("faces.unreadable.csv").exists()

    elsewhere = tmp_path / "lists" / "validation.csv"  # the same list, away from its images
    elsewhere.parent.mkdir()
    shutil.copy(synthetic_root / LISTS / "validation.csv", elsewhere)
    before = output.read_bytes()
    result = run_predict(cfg, f"model_uri={model_uri}", f"inputs={elsewhere}", f"output={output}")
    printed = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in printed
    [line] = [line for line in printed.splitlines() if "could be read" in line]
    assert f"none of the {len(rows)} inputs of {elsewhere} could be read" in line and "missing_file" in line
    assert "pass images_dir=" in line and f"{output} was left as it was" in line
    assert output.read_bytes() == before
    assert len(rows_of(output.with_name("faces.unreadable.csv"))) == len(rows)


def test_predict_py_finds_the_known_faces_in_a_folder_of_photos(trained, model_uri, photo_folder, tmp_path):
    from affectexp.inference.detectors import iou

    _, cfg, _ = trained
    folder, boxes = photo_folder
    output, rendered = tmp_path / "faces.csv", tmp_path / "rendered"
    result = run_predict(cfg, f"model_uri={model_uri}", f"inputs={folder}", f"output={output}", "render=true",
                         f"render_dir={rendered}")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = rows_of(output)
    found = sum(any(iou(known, tuple(float(r[k]) for k in "xywh")) >= 0.5 for r in rows if r["source"] == name)
                for name, known in boxes.items())
    assert found >= 0.95 * len(boxes), f"{found} of {len(boxes)} known faces found at IoU >= 0.5"
    assert {r["predicted"] for r in rows} <= set(cfg.classes.names)
    assert all(float(r["score"]) > 0 for r in rows)
    # every photo drawn, the file that is not one counted and listed, not fatal
    assert {str(p.relative_to(rendered)) for p in rendered.rglob("*.jpg")} == set(boxes)
    assert "1 inputs could not be read" in result.stdout + result.stderr
    [unreadable] = rows_of(output.with_name("faces.unreadable.csv"))
    assert unreadable["source"] == "notes.jpg" and "unreadable_image" in unreadable["reason"]


def test_predict_py_finds_the_face_in_a_real_photo(trained, model_uri, tmp_path):
    from skimage import data

    _, cfg, _ = trained
    photo = tmp_path / "astronaut.jpg"
    cv2.imwrite(str(photo), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    output = tmp_path / "faces.csv"
    result = run_predict(cfg, f"model_uri={model_uri}", f"inputs={photo}", f"output={output}")
    assert result.returncode == 0, result.stderr[-3000:]
    [face] = rows_of(output)
    x, y, w, h = (float(face[k]) for k in "xywh")
    assert 150 < x + w / 2 < 260 and 50 < y + h / 2 < 160  # the astronaut's face, around (205, 105)


def test_a_video_gives_one_row_per_face_per_sampled_frame(trained, model_uri, synthetic_root, tmp_path):
    _, cfg, _ = trained
    photos = [cv2.resize(cv2.imread(str(synthetic_root / IMAGES / r["subDirectory_filePath"])), (480, 480))
              for r in list_rows(synthetic_root)[:3]]
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (480, 480))
    for photo in photos:
        for _ in range(4):
            writer.write(photo)
    writer.release()
    output = tmp_path / "faces.csv"
    result = run_predict(cfg, f"model_uri={model_uri}", f"inputs={video}", f"output={output}",
                         "video.every_n_frames=3")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = rows_of(output)
    assert sorted({int(r["frame"]) for r in rows}) == [0, 3, 6, 9]  # 12 frames, every 3rd
    assert all(sum(int(r["frame"]) == frame for r in rows) == 1 for frame in (0, 3, 6, 9))


def test_bad_inputs_are_one_line_errors(trained, model_uri, tmp_path):
    _, cfg, _ = trained
    # Checked before the model is loaded: even a model_uri that does not load is not reached.
    for uri in (model_uri, "runs:/0123456789abcdef/model"):
        result = run_predict(cfg, f"model_uri={uri}", f"inputs={tmp_path / 'absent'}")
        assert result.returncode == 1 and f"inputs: {tmp_path / 'absent'} does not exist" in result.stdout + result.stderr
    result = run_predict(cfg, "model_uri=runs:/0123456789abcdef/model", f"inputs={tmp_path}")
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "model_uri: cannot load runs:/0123456789abcdef/model" in output
    assert "Traceback" not in output


def test_the_tflite_export_predicts_as_the_keras_model(trained, model_uri, tmp_path):
    import mlflow

    from affectexp.inference.export import TfliteModel
    from affectexp.inference.model import load_face_model

    _, cfg, _ = trained
    result = run_predict(cfg, f"model_uri={model_uri}", "export=tflite", f"export_dir={tmp_path}")
    assert result.returncode == 0, result.stderr[-3000:]
    description = json.loads((tmp_path / "tflite" / "model.json").read_text())
    assert description["class_names"] == list(cfg.classes.names) and description["face_spec"]["size"] == 48
    mlflow.set_tracking_uri(cfg.logger.tracking_uri)
    with FaceCache(cfg.cache.path) as cache:
        faces = cache.read_faces("test", 0, 64)
    keras_probabilities = load_face_model(model_uri).predict(faces)
    difference = np.abs(TfliteModel(tmp_path / "tflite" / "model.tflite").predict(faces) - keras_probabilities).max()
    assert difference < 1e-4, f"TFLite and Keras differ by up to {difference}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_line(process: subprocess.Popen, text: str, seconds: float) -> None:
    """Read the process's stderr until a line holds `text` (the moment it is ready); fail if it
    exits first. `seconds` bounds a hang, it is not a wait: this returns as soon as the line comes.

    A thread reads the lines (select() on the pipe would not see lines already in the file's
    buffer) and goes on reading after the line came, so that the server never blocks on a full pipe.
    """
    lines: queue.Queue = queue.Queue()

    def read() -> None:
        for line in process.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + seconds
    seen = []
    while True:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"no {text!r} within {seconds} s: {''.join(seen[-20:])}") from None
        if line is None:
            raise AssertionError(f"the server exited before saying {text!r}: {''.join(seen[-20:])}")
        seen.append(line)
        if text in line:
            return


def test_mlflow_serves_the_registered_model(trained, model_uri, tmp_path):
    """`mlflow models serve` on the registry alias answers /invocations as the Keras model predicts."""
    import mlflow

    from affectexp.inference.model import load_face_model, logged_model_uri, register

    _, cfg, run = trained
    mlflow.set_tracking_uri(cfg.logger.tracking_uri)
    register(logged_model_uri(run.info.run_id), "served_fer", "live")
    port = free_port()
    # mlflow starts uvicorn by name: the environment's scripts must be on PATH (an activated venv has them)
    env = {**os.environ, "MLFLOW_TRACKING_URI": cfg.logger.tracking_uri,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/served_fer@live",
                               "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
                              cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        wait_for_line(server, "Uvicorn running on", seconds=600)
        with FaceCache(cfg.cache.path) as cache:
            faces = cache.read_faces("test", 0, 16)
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations",
                                         data=json.dumps({"inputs": faces.tolist()}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as answer:
            served = np.array(json.loads(answer.read())["predictions"], dtype=np.float32)
        np.testing.assert_allclose(served, load_face_model(model_uri).predict(faces), atol=1e-5)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
