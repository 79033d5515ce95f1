"""Every model config builds a model that takes uint8 faces; the model zoo's options really apply."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import CONF_DIR, compose_config

MODELS = sorted(p.stem for p in (Path(CONF_DIR) / "model").glob("*.yaml"))
FACE_SHAPE = (32, 32, 1)  # keras.applications' smallest input
CLASSES = ["neutral", "happy", "sad", "surprise", "anger"]


def faces(n: int = 2, shape=FACE_SHAPE) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, *shape), dtype=np.uint8)


def built(tmp_path, overrides: list[str] = (), face_shape=FACE_SHAPE):
    from affectexp.tasks.train import build_model, check_config, read_config

    cfg = compose_config("train", tmp_path, list(overrides))
    settings, _ = read_config(cfg)
    check_config(settings)
    return build_model(settings, face_shape, len(CLASSES), steps_per_epoch=10), cfg


@pytest.mark.parametrize("name", MODELS)
def test_every_model_maps_uint8_faces_to_class_probabilities(name, tmp_path):
    model, _ = built(tmp_path, [f"model={name}"])
    probabilities = np.asarray(model(faces(), training=False))
    assert probabilities.shape == (2, len(CLASSES)) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert model.count_params() > 0


@pytest.mark.parametrize("name", MODELS)
def test_every_model_starts_by_standardising_the_uint8_faces(name, tmp_path):
    """Normalisation inside the model: a saved model takes the faces as stored."""
    import keras

    model, _ = built(tmp_path, [f"model={name}"])
    rescale, standardize = model.layers[1], model.layers[2]
    assert isinstance(rescale, keras.layers.Rescaling) and rescale.scale == pytest.approx(1 / 255)
    assert rescale.input is model.input and isinstance(standardize, keras.layers.LayerNormalization)
    standardized = np.asarray(keras.Model(model.input, standardize.output)(faces().astype(np.float32)))
    np.testing.assert_allclose(standardized.mean(axis=(1, 2, 3)), 0.0, atol=1e-4)
    np.testing.assert_allclose(standardized.std(axis=(1, 2, 3)), 1.0, atol=1e-3)


@pytest.mark.parametrize("name", ["mobilenet_v3", "efficientnet"])
def test_application_backbones_get_momentum_and_l2_from_config(name, tmp_path):
    import keras

    model, _ = built(tmp_path, [f"model={name}", "model.batch_norm_momentum=0.8", "model.l2=1e-3"])
    norms = [layer for layer in iter_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and {layer.momentum for layer in norms} == {0.8}
    # One L2 term per convolution and dense kernel of the backbone (depthwise kernels, a few
    # weights each, are not penalised): 1e-3 * the sum of its squared weights.
    [backbone] = [layer for layer in model.layers if hasattr(layer, "layers")]
    penalised = [layer.kernel for layer in iter_layers(backbone) if isinstance(layer, (keras.layers.Conv2D,
                                                                                       keras.layers.Dense))]
    assert len(model.losses) == len(penalised) > 10
    expected = sum(1e-3 * float(np.sum(np.square(np.asarray(kernel)))) for kernel in penalised)
    assert float(sum(np.asarray(loss) for loss in model.losses)) == pytest.approx(expected, rel=1e-4)


def iter_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from iter_layers(layer)


def test_local_weights_file_loads_into_a_grey_model(tmp_path):
    import keras

    from affectexp.models.mobilenet_v3 import build_mobilenet_v3

    rgb = keras.applications.MobileNetV3Small(input_shape=(32, 32, 3), include_top=False, weights=None,
                                              pooling="avg", include_preprocessing=False)
    weights_file = tmp_path / "mobilenet_v3_small_notop.weights.h5"
    rgb.save_weights(weights_file)
    model = build_mobilenet_v3(FACE_SHAPE, len(CLASSES), ("expression",), weights=str(weights_file))
    assert model.get_layer("gray_to_rgb").output.shape[-1] == 3  # grey faces repeated for the RGB stem
    backbone = next(layer for layer in model.layers if isinstance(layer, keras.Model))
    for loaded, saved in zip(backbone.get_weights(), rgb.get_weights()):
        np.testing.assert_array_equal(loaded, saved)
    assert model(faces(), training=False).shape == (2, len(CLASSES))


def test_mixed_precision_computes_in_16_bits_and_outputs_float32(tmp_path):
    import keras

    model, _ = built(tmp_path, ["trainer.precision=mixed_bfloat16", "model.widths=[8,16]", "model.dense_units=16"])
    conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert conv.compute_dtype == "bfloat16" and conv.variable_dtype == "float32"
    labels = np.arange(4) % len(CLASSES)
    model.train_on_batch(faces(4), labels)  # it trains under the policy
    assert model(faces(), training=False).dtype == "float32"
    assert keras.mixed_precision.global_policy().name == "float32"  # restored for whatever is built next


def test_label_smoothing_moves_the_targets_towards_uniform():
    from affectexp.training.losses import SmoothedSparseCrossentropy

    probabilities = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], dtype=np.float32)
    labels = np.array([0, 2])
    smoothing = 0.3
    targets = np.full((2, 3), smoothing / 3) + np.eye(3)[labels] * (1 - smoothing)
    expected = -(targets * np.log(probabilities)).sum(axis=1).mean()
    assert float(SmoothedSparseCrossentropy(3, smoothing)(labels, probabilities)) == pytest.approx(expected, rel=1e-5)
    plain = -np.log(probabilities[[0, 1], labels]).mean()
    assert float(SmoothedSparseCrossentropy(3, 0.0)(labels, probabilities)) == pytest.approx(plain, rel=1e-5)


NEW_MODEL = '''
import keras
from affectexp.models.layers import normalized_input, output_heads


def build_tiny(input_shape, num_classes, outputs, units: int = 8, dropout: float = 0.0):
    inputs, x = normalized_input(input_shape)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(units, 3)(x))
    return keras.Model(inputs, output_heads(x, num_classes, dropout, outputs), name="tiny")


def build_headless(input_shape, num_classes, units: int = 8):
    inputs, x = normalized_input(input_shape)
    return keras.Model(inputs, keras.layers.Dense(num_classes)(keras.layers.Flatten()(x)))
'''


def test_a_new_model_is_one_file_and_one_function(tmp_path, monkeypatch):
    """What conf/model/tiny.yaml would hold: `_target_: tiny_model.build_tiny` and its arguments."""
    from affectexp.errors import ConfigError
    from affectexp.tasks.train import build_model, check_config, read_config

    (tmp_path / "tiny_model.py").write_text(NEW_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = compose_config("train", tmp_path)
    cfg.model = OmegaConf.create({"_target_": "tiny_model.build_tiny", "units": 4})
    settings, _ = read_config(cfg)
    check_config(settings)
    model = build_model(settings, FACE_SHAPE, len(CLASSES), steps_per_epoch=10)
    assert model.name == "tiny" and model(faces(), training=False).shape == (2, len(CLASSES))
    cfg.model.units = "four"
    with pytest.raises(ConfigError, match=r"model\.units: .*tiny_model\.build_tiny"):
        check_config(read_config(cfg)[0])
    # A builder that cannot be given the head's outputs is refused before training, naming them.
    cfg.model = OmegaConf.create({"_target_": "tiny_model.build_headless"})
    with pytest.raises(ConfigError, match=r"model\._target_: tiny_model\.build_headless has no argument 'outputs'"):
        check_config(read_config(cfg)[0])
    sys.modules.pop("tiny_model", None)


HEADS = sorted(p.stem for p in (Path(CONF_DIR) / "head").glob("*.yaml"))


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("name", MODELS)
def test_every_model_builds_and_trains_a_step_with_every_head(name, head, tmp_path):
    """Each head's outputs (probabilities (b, K), valence/arousal (b, 2) in [-1, 1], or both by
    name) from every builder, and one optimiser step on masked targets moves each head's weights."""
    model, cfg = built(tmp_path, [f"model={name}", f"head={head}"])
    outputs = list(cfg.head.outputs)
    labels = np.array([0, 1, 2, 3], np.int64)
    affect = np.array([[0.5, 0.2], [-2, -2], [-0.3, 0.8], [0.1, -2]], np.float32)
    targets = {"expression": labels, "affect": affect}
    y = targets[outputs[0]] if len(outputs) == 1 else {k: targets[k] for k in outputs}
    predicted = model(faces(4), training=False)
    predicted = predicted if isinstance(predicted, dict) else {outputs[0]: predicted}
    assert sorted(predicted) == sorted(outputs)
    if "expression" in predicted:
        assert np.asarray(predicted["expression"]).shape == (4, len(CLASSES))
    if "affect" in predicted:
        values = np.asarray(predicted["affect"])
        assert values.shape == (4, 2) and np.all(np.abs(values) <= 1)
    before = {k: np.asarray(model.get_layer(k).kernel).copy() for k in outputs}
    logs = model.train_on_batch(faces(4), y, return_dict=True)
    assert np.isfinite(logs["loss"])
    for k in outputs:
        assert not np.array_equal(before[k], np.asarray(model.get_layer(k).kernel)), k


def test_a_head_is_checked_before_training(tmp_path):
    """Outputs it cannot build and metrics it does not report stop in one line naming the key."""
    from affectexp.errors import ConfigError

    with pytest.raises(ConfigError, match=r"head\.outputs: \['expression', 'valence'\]; name one or more of"):
        built(tmp_path, ["head.outputs=[expression,valence]"])
    with pytest.raises(ConfigError, match=r"head\.outputs: \[\]"):
        built(tmp_path, ["head.outputs=[]"])
    with pytest.raises(ConfigError, match=r"trainer\.monitor: 'val_accuracy' is not reported by head=affect"):
        built(tmp_path, ["head=affect", "trainer.monitor=val_accuracy"])
    with pytest.raises(ConfigError, match=r"trainer\.objective: 'val_ccc_valence' is never reported by a model predicting \['expression'\]"):
        built(tmp_path, ["trainer.objective=val_ccc_valence"])
    with pytest.raises(ConfigError, match=r"head\.affect_weight: -1"):
        built(tmp_path, ["head=multitask", "head.affect_weight=-1"])


@pytest.mark.parametrize("jit", ["true", "false", "null"])
def test_jit_compile_reaches_the_compiled_model(jit, tmp_path):
    model, _ = built(tmp_path, [f"trainer.jit_compile={jit}", "model.widths=[8,16]", "model.dense_units=16"])
    # null is Keras' "auto", which turns XLA off on a machine without a GPU (this one).
    assert model.jit_compile is {"true": True, "false": False, "null": False}[jit]
    model.train_on_batch(faces(4), np.arange(4) % len(CLASSES))


def test_auto_precision_is_float32_without_a_gpu(tmp_path):
    import keras
    import tensorflow as tf

    assert not tf.config.list_physical_devices("GPU")  # what this test is about
    model, _ = built(tmp_path, ["trainer.precision=auto", "model.widths=[8,16]", "model.dense_units=16"])
    conv = next(layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D))
    assert conv.compute_dtype == "float32"


def test_auto_precision_is_mixed_float16_when_every_gpu_has_tensor_cores(monkeypatch):
    """What auto picks from the GPUs' compute capabilities, read through TensorFlow's own calls."""
    import tensorflow as tf

    from affectexp.training.runtime import resolve_precision

    def machine(capabilities):
        monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: list(capabilities))
        monkeypatch.setattr(tf.config.experimental, "get_device_details",
                            lambda gpu: {"compute_capability": gpu} if gpu else {})
        return resolve_precision("auto")

    assert machine([(9, 0)]) == "mixed_float16"  # H100/H200
    assert machine([(8, 0), (7, 0)]) == "mixed_float16"
    assert machine([(9, 0), (6, 1)]) == "float32"  # one Pascal card: no tensor cores
    assert machine([None]) == "float32"  # capability unknown
    assert machine([]) == "float32"
    assert resolve_precision("mixed_bfloat16") == "mixed_bfloat16"
