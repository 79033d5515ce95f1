"""Typed config schemas behind the Hydra config groups: the one place for their types and defaults.

Registered in Hydra's ConfigStore so that a misspelt key or a value of the wrong type
(``trainer.epochs=three``) stops at start with Hydra's own message. A group's YAML file says only
what differs from its schema here (`conf/trainer/default.yaml` is a comment), so a default is read
in one place and cannot drift. Groups whose keys differ per choice (dataset, model, optimizer) stay
untyped here: they are checked against the signature of what their `_target_` names.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from difflib import get_close_matches
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from affectexp.errors import ConfigError

# The entry configs (train.yaml, ...) and their groups, beside the package: for code that composes them itself.
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


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


class Balance(_Choice):
    none = "none"
    class_weight = "class_weight"  # weight the loss by n / (k * count of the class)
    oversample = "oversample"  # draw every class as often as the largest, each epoch
    truncate = "truncate"  # the seed notebook's: every class cut to the smallest's count


class Precision(_Choice):
    float32 = "float32"
    mixed_float16 = "mixed_float16"  # GPUs with tensor cores
    mixed_bfloat16 = "mixed_bfloat16"  # TPUs, recent CPUs and GPUs
    auto = "auto"  # mixed_float16 where every GPU has tensor cores (compute capability >= 7.0), else float32


class AugmentOn(_Choice):
    host = "host"  # albumentations on the CPU, in trainer.augment_workers processes
    device = "device"  # the same preset as Keras ops in the training step (training/device_augment.py)


class Strategy(_Choice):
    default = "default"  # one device
    mirrored = "mirrored"  # tf.distribute.MirroredStrategy: every GPU of one machine


class Split(_Choice):
    train = "train"
    val = "val"
    test = "test"


@dataclass
class PathsConfig:
    """Every directory the project writes to; nothing else hard-codes one."""

    root: str = "${oc.env:AFFECTEXP_ROOT,.}"
    data_dir: str = "${paths.root}/data"
    cache_dir: str = "${paths.root}/caches"
    runs_dir: str = "${paths.root}/runs"
    output_dir: str = "${paths.root}/outputs"


@dataclass
class ClassesConfig:
    """An ordered set of expressions, the labels 0..K-1 (conf/classes/<name>.yaml)."""

    name: str = "???"
    names: list[str] = MISSING


@dataclass
class CacheConfig:
    """The HDF5 face cache shared by preprocess.py (writes it) and train.py (reads it)."""

    path: str = "${paths.cache_dir}/${dataset.name}-${cache.color}${cache.size}-${classes.name}.h5"
    size: int = 96  # faces are size x size pixels
    color: Color = Color.gray
    chunk_rows: int = 512  # faces per HDF5 chunk and per worker task


@dataclass
class FacesConfig:
    """How a face is cut out of its photo."""

    margin: float = 0.0  # extra border around the box, as a fraction of its size
    square: bool = False  # widen the shorter side of the box to make it square
    out_of_bounds: OutOfBounds = OutOfBounds.clamp
    # Decode JPEGs at 1/2, 1/4 or 1/8 scale when the face stays twice the target size there: faster,
    # within about one grey level of a full decode.
    reduced_decoding: bool = True
    # Turn each face so its eyes (landmarks 36-41, 42-47) are level; rows without landmarks stay as they are.
    align: bool = False


@dataclass
class SplitConfig:
    """The validation split: held out of the training list when the data set has none of its own."""

    val_fraction: float = 0.1  # stratified per class
    seed: int = 0


@dataclass
class ShardConfig:
    """Preprocessing on several machines: one run per index (`-m shard.index=0,1,2,3 shard.count=4`),
    each crops one contiguous part of the rows into its own shard file; then `merge=true
    shard.count=4` joins them into cache.path."""

    index: int = 0  # which contiguous part of the rows this run crops, 0..count-1
    count: int = 1  # 1: no sharding


@dataclass
class PreprocessConfig:
    paths: PathsConfig = field(default_factory=PathsConfig)
    dataset: Any = None
    classes: ClassesConfig = field(default_factory=ClassesConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    faces: FacesConfig = field(default_factory=FacesConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    num_workers: Optional[int] = None  # worker processes; None: one per core; 0: crop in the parent
    overwrite: bool = False
    shard: ShardConfig = field(default_factory=ShardConfig)
    merge: bool = False  # join the shard caches of shard.count runs into cache.path


@dataclass
class TrainerConfig:
    epochs: int = 10
    batch_size: int = 64  # the global batch: split across the replicas under strategy=mirrored
    seed: int = 0
    deterministic: bool = False  # true: the same weights twice (TF op determinism; slower on GPU)
    early_stopping_patience: int = 0  # 0 disables early stopping
    # Picks the best checkpoint (and what early stopping watches); by default the head's (val_accuracy,
    # or val_loss for a head without the expression output).
    monitor: str = "${head.monitor}"
    # Done each epoch at training time: the cache keeps every face.
    balance: Balance = Balance.class_weight
    label_smoothing: float = 0.0  # s: targets 1 - s + s/k for the true class, s/k for the others
    precision: Precision = Precision.float32
    # XLA-compile the training step; None: Keras' choice (on where a GPU is present and every layer supports it).
    jit_compile: Optional[bool] = None
    strategy: Strategy = Strategy.default
    ram_budget_mb: int = 2048  # a split smaller than this is read into memory once; a larger one is streamed
    steps_per_epoch: Optional[int] = None  # None: the whole train split each epoch
    # Where training faces are augmented: on the CPU (host), or by the device that trains (device: for
    # accelerators that the CPU's cores cannot keep fed; the same presets, differences in
    # affectexp/training/device_augment.py).
    augment_on: AugmentOn = AugmentOn.host
    # Processes that augment training batches at idle priority (augment_on=host); None: one per core
    # (at most 8); 0: augment in the reader threads.
    augment_workers: Optional[int] = None
    # What train.py returns, what sweepers and tuners optimise: <val|test>_<metric> of the kept model,
    # a metric of its evaluation (affectexp/training/objectives.py: accuracy, balanced_accuracy, macro_f1;
    # ccc_valence, pearson_arousal, ...); by default the head's. Select on validation: choosing on the
    # test split overstates the result.
    objective: str = "${head.objective}"


@dataclass
class HeadConfig:
    """What the model predicts (conf/head/<name>.yaml): its outputs, "expression" (class
    probabilities) and/or "affect" (valence and arousal), and each one's weight in the loss."""

    name: str = "???"
    outputs: list[str] = MISSING  # one or both of expression, affect (affectexp/models/layers.py)
    expression_weight: float = 1.0  # of the cross-entropy, when there are several outputs
    affect_weight: float = 1.0  # of the masked mean squared error of valence and arousal
    # The defaults of trainer.monitor and trainer.objective: what this head reports.
    monitor: str = "val_accuracy"
    objective: str = "val_accuracy"


@dataclass
class AugmentationConfig:
    """conf/augmentation/<name>.yaml."""

    name: str = "???"
    transform: Any = None  # albumentations' serialised Compose (A.to_dict), or None


@dataclass
class LoggerConfig:
    """Where runs are logged: MLflow."""

    # Or http://host:port of an MLflow server. SQLite, not a plain ./mlruns folder: MLflow 3 refuses that.
    tracking_uri: str = "sqlite:///${paths.root}/mlflow.db"
    artifact_location: str = "${paths.root}/mlartifacts"
    experiment_name: str = "affectexp"
    run_name: Optional[str] = None  # None: named from the model and the overrides (tasks/names.py)
    offline: bool = False  # true: if the server does not answer, log to offline_uri and say so
    offline_uri: str = "sqlite:///${paths.root}/mlflow.db"
    system_metrics: bool = True  # MLflow samples CPU, memory, disk (and GPU) use into system/* metrics
    # Register each run's model (a sweep's or search's: its best child's) under this name in MLflow's
    # model registry, and point this alias at the new version (e.g. champion): models:/<name>@<alias>.
    register_model: Optional[str] = None
    register_alias: Optional[str] = None
    # The batch job this run runs in (a SageMaker training or processing job: set from its
    # environment, affectexp/pipelines/contract.py), recorded as the run's tag affectexp.job_name.
    job_name: Optional[str] = None


@dataclass
class TunerConfig:
    """A KerasTuner search instead of one run (tuner=random|bayesian|hyperband); each trial is a
    training run, a child of the search's MLflow run."""

    type: str = "???"  # random | bayesian | hyperband: the tuner=... file chooses it
    max_trials: int = 4  # random and bayesian; hyperband's budget is trainer.epochs
    hyperband_factor: int = 3
    objective: str = "${trainer.objective}"  # <val|test>_<accuracy|balanced_accuracy|macro_f1> of the kept model
    seed: int = 0
    # {config key or group: {type: float|int|choice|boolean, ...}}; conf/tuner/random.yaml's is every tuner's.
    space: Any = None
    export_name: str = "tuned_${tuner.type}"  # the best trial is written as <export dir>/experiment/<export_name>.yaml
    export_config_dir: Optional[str] = None  # None: the search's folder, runs/tuner/<type>-<config hash>
    worker_wait_s: float = 600.0  # distributed mode: how long a worker waits for the chief


@dataclass
class TrainConfig:
    paths: PathsConfig = field(default_factory=PathsConfig)
    dataset: Any = None
    classes: ClassesConfig = field(default_factory=ClassesConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    model: Any = None  # checked against its builder's signature (affectexp/targets.py)
    head: HeadConfig = field(default_factory=HeadConfig)
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)
    optimizer: Any = None  # a Keras optimizer class and its arguments, checked when built (training/optimizers.py)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    tuner: Optional[TunerConfig] = None
    # Also write the kept model's MLflow model files (MLmodel, data/, ...) into this folder: SageMaker's
    # SM_MODEL_DIR, which becomes the training job's model artifact. None: the model is only logged.
    model_dir: Optional[str] = None
    # Also write the run's metrics (metrics.json) and its plots and files into this folder (SM_OUTPUT_DATA_DIR).
    report_dir: Optional[str] = None


@dataclass
class EvaluateConfig:
    """evaluate.py: any saved model on any cache, classes matched by name."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    dataset: Any = None
    classes: ClassesConfig = field(default_factory=ClassesConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    model_uri: str = "???"  # runs:/<run id>/model, models:/<name>@<alias>, models:/<name>/<version>, or a .keras file
    split: Split = Split.test
    batch_size: int = 256
    # True: predict only among the classes the cache has (the usual cross-data-set protocol);
    # False: a face predicted as a class the cache lacks counts as wrong.
    restrict_to_cache_classes: bool = True
    # Also write the evaluation (evaluation.json: the split's accuracy, balanced_accuracy, macro_f1;
    # metrics.json: the run's metrics) and its plots into this folder: a SageMaker pipeline's
    # property file, read by its condition step.
    report_dir: Optional[str] = None


class ExportFormat(_Choice):
    tflite = "tflite"  # TensorFlow Lite (LiteRT): phones, edge devices
    saved_model = "saved_model"  # TensorFlow SavedModel: TF Serving, other TensorFlow code


@dataclass
class VideoConfig:
    every_n_frames: int = 10  # frames 0, n, 2n, ... of each video are read (1: every frame)


@dataclass
class PredictConfig:
    """predict.py: a logged model on photos, folders, videos or an AffectNet-style list; or export it."""

    paths: PathsConfig = field(default_factory=PathsConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)  # where runs:/ and models:/ URIs are looked up
    detector: Any = None  # conf/detector/<name>.yaml: the face detector's class (_target_) and arguments
    model_uri: str = "???"  # runs:/<run id>/model, models:/<name>@<alias>, models:/<name>/<version>
    inputs: Optional[str] = None  # a photo, a video, a folder of them (recursively), or a .csv list with boxes
    images_dir: Optional[str] = None  # the folder a .csv list's paths are relative to; None: inputs.default_images_dir
    output: str = "${paths.output_dir}/predict/faces.csv"  # one row per face
    batch_size: int = 256  # faces per model call
    render: bool = False  # also write each photo (video) with boxes and predictions drawn, into render_dir
    render_dir: str = "${paths.output_dir}/predict/rendered"
    video: VideoConfig = field(default_factory=VideoConfig)
    export: Optional[ExportFormat] = None  # instead of predicting, write the model in this format
    export_dir: str = "${paths.output_dir}/export"  # the export goes to <export_dir>/<export>


# Values their type allows but no run can use: (key, test, what the key must be). Checked by
# check_values before any work, since a schema holds types, not ranges (optimizer.lr's type too:
# the optimizer group is untyped).
VALUE_RANGES = (
    ("cache.size", lambda v: v >= 1, "the side of a face in pixels, 1 or more"),
    ("cache.chunk_rows", lambda v: v >= 1, "faces per HDF5 chunk, 1 or more"),
    ("split.val_fraction", lambda v: 0.0 <= v < 1.0, "the part of the training rows held out, in [0, 1)"),
    ("faces.margin", lambda v: v > -0.5, "above -0.5 (at -0.5 or below, every box shrinks to nothing)"),
    ("video.every_n_frames", lambda v: v >= 1, "1 (every frame) or more"),
    ("batch_size", lambda v: v >= 1, "faces per model call, 1 or more"),
    ("head.expression_weight", lambda v: v >= 0, "a loss weight, 0 or more"),
    ("head.affect_weight", lambda v: v >= 0, "a loss weight, 0 or more"),
    ("optimizer.lr", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
     "the learning rate, a number above 0"),
    ("trainer.epochs", lambda v: v >= 1, "the epochs to train, 1 or more"),
    ("trainer.batch_size", lambda v: v >= 1, "faces per training step, 1 or more"),
    ("trainer.steps_per_epoch", lambda v: v >= 1, "training steps per epoch, 1 or more (null: the whole train split)"),
    ("trainer.label_smoothing", lambda v: 0.0 <= v < 1.0, "the share of each target spread over the classes, in [0, 1)"),
    ("trainer.early_stopping_patience", lambda v: v >= 0, "epochs without improvement before stopping, 0 (never) or more"),
    ("trainer.ram_budget_mb", lambda v: v >= 0, "megabytes, 0 (always stream the cache) or more"),
    ("tuner.max_trials", lambda v: v >= 1, "the trials to run, 1 or more"),
    ("tuner.hyperband_factor", lambda v: v >= 2, "hyperband's reduction factor, 2 or more"),
)


def check_values(cfg: DictConfig) -> None:
    """Refuse, naming the key, a key the schema does not have (added with `+key=...`), a
    mandatory value left out (`???`) or a value out of its range.

    Keys that `cfg` does not have are not checked, so every entry config can be passed.
    """
    unknown = unknown_keys(cfg)
    if unknown:
        key, known = unknown[0]
        close = get_close_matches(key.rsplit(".", 1)[-1], known, n=1)
        hint = f" (did you mean {key.rsplit('.', 1)[0] + '.' if '.' in key else ''}{close[0]}?)" if close else ""
        raise ConfigError(f"{key}: no such key{hint}; a `+` adds a key that nothing reads: remove it")
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        also = f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""
        raise ConfigError(f"{missing[0]}: no value given; pass {missing[0]}=... on the command line{also}")
    for key, allowed, expected in VALUE_RANGES:
        value = OmegaConf.select(cfg, key)
        if value is not None and not allowed(value):
            raise ConfigError(f"{key}: {value}; it must be {expected}")


def unknown_keys(cfg: DictConfig, prefix: str = "") -> list[tuple[str, list[str]]]:
    """(dotted key, the keys its node has in its schema) for each key of a typed node that its
    schema does not have: Hydra's `+key=...` adds one where a plain override would stop at
    composition. Untyped nodes (dataset, model, optimizer) are checked against their `_target_`."""
    schema = OmegaConf.get_type(cfg)
    if not is_dataclass(schema):
        return []
    known = [f.name for f in fields(schema)]
    found = [(prefix + key, known) for key in cfg.keys() if key not in known]
    for key in known:
        node = cfg._get_node(key)
        if isinstance(node, DictConfig) and not node._is_none():
            found += unknown_keys(node, f"{prefix}{key}.")
    return found


def check_unchosen_groups(entry: str, overrides: list[str]) -> None:
    """ConfigError for a command-line override of a key inside a group that the entry config leaves
    unchosen (`tuner: null` in conf/train.yaml) and that no override chooses: `tuner.max_trials=2`
    without `tuner=random`. For the entry scripts, before Hydra composes: Hydra stops there with
    an internal traceback. The groups an experiment chooses (`experiment=NAME`) count as chosen."""
    import yaml

    def defaults_of(path: Path) -> dict:
        """{group: choice} of a config file's defaults list ("override /tuner: random" -> "tuner")."""
        if not path.is_file():
            return {}  # an experiment elsewhere (--config-dir): Hydra names what it cannot find
        items = (yaml.safe_load(path.read_text()) or {}).get("defaults", [])
        return {group.removeprefix("override ").lstrip("/"): choice
                for item in items if isinstance(item, dict) for group, choice in item.items()}

    unchosen = {group for group, choice in defaults_of(CONF_DIR / f"{entry}.yaml").items() if choice is None}
    keys = [override.lstrip("+~").split("=", 1)[0] for override in overrides]
    chosen = {key.split("@", 1)[0] for key in keys if "." not in key}
    for override in overrides:
        key, _, value = override.lstrip("+").partition("=")
        if key == "experiment":
            chosen |= set(defaults_of(CONF_DIR / "experiment" / f"{value}.yaml"))
    for key in keys:
        group = key.split(".", 1)[0]
        if "." in key and group in unchosen and group not in chosen:
            options = sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))
            raise ConfigError(f"{key}: no {group} is chosen to set it on; choose one too: {group}=<{'|'.join(options)}>")


def register_schemas() -> None:
    """Make the schemas available to the entry configs' defaults lists."""
    store = ConfigStore.instance()
    store.store(name="preprocess_schema", node=PreprocessConfig)
    store.store(name="train_schema", node=TrainConfig)
    store.store(name="evaluate_schema", node=EvaluateConfig)
    store.store(name="predict_schema", node=PredictConfig)


register_schemas()
