"""Optimizers and learning-rate schedules, looked up by name from conf/optimizer/."""

from __future__ import annotations

import keras

from affectexp.errors import ConfigError

OPTIMIZERS = {
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "sgd": keras.optimizers.SGD,
}
SCHEDULES = ("constant", "cosine")


def check_optimizer_config(cfg) -> None:
    """ConfigError naming the key when optimizer.name or optimizer.schedule is not in the registry."""
    if cfg.name not in OPTIMIZERS:
        raise ConfigError(f"optimizer.name: unknown optimizer {cfg.name!r}; choose from {list(OPTIMIZERS)}")
    if cfg.schedule not in SCHEDULES:
        raise ConfigError(f"optimizer.schedule: unknown schedule {cfg.schedule!r}; choose from {list(SCHEDULES)}")


def learning_rate(cfg, steps_per_epoch: int, epochs: int):
    """A float (constant) or a Keras schedule (cosine decay after an optional linear warm-up)."""
    check_optimizer_config(cfg)
    if cfg.schedule == "constant":
        return cfg.lr
    warmup = cfg.warmup_epochs * steps_per_epoch
    decay_steps = max(epochs * steps_per_epoch - warmup, 1)
    if warmup == 0:
        return keras.optimizers.schedules.CosineDecay(cfg.lr, decay_steps)
    return keras.optimizers.schedules.CosineDecay(0.0, decay_steps, warmup_target=cfg.lr, warmup_steps=warmup)


def build_optimizer(cfg, steps_per_epoch: int, epochs: int) -> keras.optimizers.Optimizer:
    """The optimizer named by cfg.name with cfg.lr (and its schedule), weight decay, momentum."""
    kwargs = {"learning_rate": learning_rate(cfg, steps_per_epoch, epochs)}
    if cfg.weight_decay:
        kwargs["weight_decay"] = cfg.weight_decay
    if cfg.name == "sgd":
        kwargs["momentum"] = cfg.momentum
    return OPTIMIZERS[cfg.name](**kwargs)
