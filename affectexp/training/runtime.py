"""How a run uses the machine: distribution strategy, numeric precision, seeds, determinism.

Each setting is process-wide in TensorFlow/Keras; the context managers here restore the
previous state on exit, so runs executed one after another in one process (tests, Hydra's
basic launcher) do not leak settings into each other.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

import keras
import tensorflow as tf

log = logging.getLogger(__name__)


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The tf.distribute strategy for `trainer.strategy`: the one place that maps names to strategies.

    "mirrored" replicates the model on every GPU of this machine (or on every logical CPU
    device, as the tests do) and splits each global batch between the replicas. Several
    machines (MultiWorkerMirroredStrategy) are not offered: Keras 3's fit fails under it
    (keras-team/keras#20585); add it here once that is fixed upstream.
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
        log.info("MirroredStrategy over %d replicas: %s", strategy.num_replicas_in_sync,
                 [d for d in strategy.extended.worker_devices])
        return strategy
    raise ValueError(f"trainer.strategy: unknown strategy {name!r}; choose from ['default', 'mirrored']")


@contextlib.contextmanager
def dtype_policy(name: str) -> Iterator[None]:
    """Layers created inside use the Keras dtype policy `name` ("float32", "mixed_float16", ...).

    Under a mixed policy layers compute in 16 bits and keep float32 weights; Keras wraps the
    optimizer in a LossScaleOptimizer for mixed_float16 at compile time.
    """
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
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
