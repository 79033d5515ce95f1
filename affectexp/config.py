"""Typed config schemas behind the Hydra config groups.

Registered in Hydra's ConfigStore so that a misspelt key or a value of the wrong type
(``trainer.epochs=three``) stops at start with Hydra's own message. Groups whose keys
differ per choice (dataset, model, augmentation) stay untyped here: they are checked by
the signature of the function they are built with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

from hydra.core.config_store import ConfigStore


class _Choice(str, Enum):
    """A closed set of names; interpolates as its bare value (`${cache.color}` -> "gray")."""

    def __str__(self) -> str:
        return self.value


class Color(_Choice):
    gray = "gray"
    rgb = "rgb"


class OutOfBounds(_Choice):
    clamp = "clamp"  # crop only the part of the box inside the image
    pad = "pad"  # keep the box's shape, fill the outside with the border's pixels


@dataclass
class PathsConfig:
    root: str = "."
    data_dir: str = "${paths.root}/data"
    cache_dir: str = "${paths.root}/caches"
    runs_dir: str = "${paths.root}/runs"
    output_dir: str = "${paths.root}/outputs"


@dataclass
class ClassesConfig:
    name: str = "???"
    names: list[str] = field(default_factory=list)


@dataclass
class CacheConfig:
    path: str = "???"
    size: int = 96
    color: Color = Color.gray
    chunk_rows: int = 512


@dataclass
class FacesConfig:
    margin: float = 0.0
    square: bool = False
    out_of_bounds: OutOfBounds = OutOfBounds.clamp
    reduced_decoding: bool = True


@dataclass
class SplitConfig:
    val_fraction: float = 0.1
    seed: int = 0


@dataclass
class PreprocessConfig:
    paths: PathsConfig = field(default_factory=PathsConfig)
    dataset: Any = None
    classes: ClassesConfig = field(default_factory=ClassesConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    faces: FacesConfig = field(default_factory=FacesConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    num_workers: Optional[int] = None  # None: every core
    overwrite: bool = False


@dataclass
class OptimizerConfig:
    name: str = "adam"
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # SGD only
    schedule: str = "constant"  # constant | cosine
    warmup_epochs: int = 0


@dataclass
class TrainerConfig:
    epochs: int = 10
    batch_size: int = 64
    seed: int = 0
    deterministic: bool = False
    early_stopping_patience: int = 0  # 0 disables early stopping
    monitor: str = "val_accuracy"
    balance: str = "class_weight"  # none | class_weight
    ram_budget_mb: int = 2048
    steps_per_epoch: Optional[int] = None  # None: the whole train split each epoch
    objective: str = "test_accuracy"


@dataclass
class LoggerConfig:
    tracking_uri: str = "sqlite:///${paths.root}/mlflow.db"
    artifact_location: str = "${paths.root}/mlartifacts"
    experiment_name: str = "affectexp"
    run_name: Optional[str] = None


@dataclass
class TrainConfig:
    paths: PathsConfig = field(default_factory=PathsConfig)
    dataset: Any = None
    classes: ClassesConfig = field(default_factory=ClassesConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    model: Any = None
    augmentation: Any = None
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)


def register_schemas() -> None:
    """Make the schemas available to the entry configs' defaults lists."""
    store = ConfigStore.instance()
    store.store(name="preprocess_schema", node=PreprocessConfig)
    store.store(name="train_schema", node=TrainConfig)


register_schemas()
