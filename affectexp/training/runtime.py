"""How a run uses the machine: distribution strategy, numeric precision, seeds, determinism.

Each setting is process-wide in TensorFlow/Keras; the context managers here restore the
previous state on exit, so runs executed one after another in one process (tests, Hydra's
basic launcher) do not leak settings into each other.

TensorFlow is imported by the functions that need it, not with this module: the model and the
input pipeline also build under Keras's JAX backend (benchmarks/device.py on a GPU machine
whose environment has JAX and no TensorFlow), where only dtype_policy is used.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

import keras

if TYPE_CHECKING:
    import tensorflow as tf

log = logging.getLogger(__name__)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy for `trainer.strategy`: the one place that maps names to strategies.

    "mirrored" replicates the model on every GPU of this machine (or on every logical CPU
    device, as the tests do) and splits each global batch between the replicas. Several
    machines (MultiWorkerMirroredStrategy) are not offered: Keras 3's fit fails under it
    (keras-team/keras#20585); add it here once that is fixed upstream.
    """
    import tensorflow as tf

    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        log.info("MirroredStrategy over %d replicas: %s", strategy.num_replicas_in_sync,
                 [d for d in strategy.extended.worker_devices])
        return strategy
    raise ValueError(f"trainer.strategy: unknown strategy {name!r}; choose from ['default', 'mirrored']")


# Tensor cores (float16 matrix units) arrived with compute capability 7.0 (Volta).
TENSOR_CORE_CAPABILITY = (7, 0)


def resolve_precision(name: str) -> str:
    """The Keras dtype policy for `trainer.precision`: "auto" is mixed_float16 when this machine
    has GPUs and every one has tensor cores (on other devices float16 is slower than float32),
    else float32; any other name is itself."""
    if name != "auto":
        return name
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    capabilities = [tf.config.experimental.get_device_details(gpu).get("compute_capability") for gpu in gpus]
    chosen = "mixed_float16" if gpus and all(c is not None and tuple(c) >= TENSOR_CORE_CAPABILITY
                                             for c in capabilities) else "float32"
    log.info("trainer.precision=auto: %s (GPU compute capabilities: %s)", chosen, capabilities or "no GPU")
    return chosen


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Layers created inside use the Keras dtype policy for `name` ("float32", "mixed_float16",
    "auto": resolve_precision).

    Under a mixed policy layers compute in 16 bits and keep float32 weights; Keras wraps the
    optimizer in a LossScaleOptimizer for mixed_float16 at compile time.
    """
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(resolve_precision(name))
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


@contextlib.contextmanager
def reproducible(seed: int, deterministic: bool) -> Iterator[None]:
    """Seed Python, NumPy, TensorFlow and Keras; with `deterministic`, also make TF ops deterministic.

    Op determinism makes two runs of the same config give the same weights (at some speed
    cost on GPUs); it is process-wide, so it is switched back off on exit.
    """
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    was_deterministic = _op_determinism_enabled()
    if deterministic and not was_deterministic:
        tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        if deterministic and not was_deterministic:
            _disable_op_determinism()


def _op_determinism_enabled() -> bool:
    # TensorFlow exports enable_op_determinism only; its counterparts live in this module.
    from tensorflow.python.framework import config as tf_config

    return tf_config.is_op_determinism_enabled()


def _disable_op_determinism() -> None:
    from tensorflow.python.framework import config as tf_config

    tf_config.disable_op_determinism()
