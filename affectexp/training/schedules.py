"""Learning-rate schedules, each named by `_target_` in conf/optimizer/schedule/<name>.yaml.

A schedule is a function (lr, steps_per_epoch, epochs, *, its config keys) returning what a Keras
optimizer takes as `learning_rate`: a float or a keras.optimizers.schedules.LearningRateSchedule.
`lr` is optimizer.lr (the key searches and sweeps vary); the step counts are known only once the
input pipeline is built, hence `_partial_: true`. A new schedule is one such function and one file.
"""

from __future__ import annotations

import keras

# What affectexp.training.optimizers passes every schedule; its other arguments are its config.
SCHEDULE_ARGUMENTS = ("lr", "steps_per_epoch", "epochs")


def constant(lr: float, steps_per_epoch: int, epochs: int) -> float:
    """lr at every step (the step counts are not needed)."""
    return lr


def cosine(lr: float, steps_per_epoch: int, epochs: int, *,
           warmup_epochs: int) -> keras.optimizers.schedules.CosineDecay:
    """Cosine decay from lr to 0 over the remaining steps, after a linear warm-up from 0 to lr over
    the first `warmup_epochs` epochs (none when 0)."""
    warmup = warmup_epochs * steps_per_epoch
    decay_steps = max(epochs * steps_per_epoch - warmup, 1)
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(lr, decay_steps)
    return keras.optimizers.schedules.CosineDecay(0.0, decay_steps, warmup_target=lr, warmup_steps=warmup)
