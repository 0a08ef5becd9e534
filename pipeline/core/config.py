"""Schema of params.yaml: every key a stage may read, with its type.

The values live in conf/ (composed into params.yaml); these dataclasses only say which keys
exist and what type each has, so a mistyped or unknown key fails before any work starts.
No field has a default: conf/ is the one source of values, and a key missing from
params.yaml is an error (tests/test_config.py checks that no default creeps back in).
A key with a fixed set of choices is an Enum: OmegaConf refuses any other value, naming the
key and the choices. They are StrEnums, so each member is its own string: it compares equal
to it, and str(), f-strings and json.dumps give it (MLflow params, the config digest).
A range that a type cannot say is checked by the dataclass's __post_init__, which
OmegaConf.to_object runs (stages.common.validated).
"""

import hashlib
import json
from dataclasses import asdict, dataclass
from enum import Enum, StrEnum
from typing import Any

from pipeline.core.errors import StagewiseError


class Task(StrEnum):
    """What a model predicts per image (pipeline.tasks): one class, a set of labels (possibly
    empty), or numbers."""

    single_label = "single_label"
    multilabel = "multilabel"
    regression = "regression"


class Source(StrEnum):
    """Where the images come from (pipeline.data.sources)."""

    digits = "digits"
    folder = "folder"
    table = "table"


class Label(StrEnum):
    """How an image gets its label (pipeline.data.sources)."""

    parent = "parent"
    regex = "regex"
    column = "column"


class Resize(StrEnum):
    """fastai's resize methods (pipeline.data.decode)."""

    squish = "squish"
    crop = "crop"
    pad = "pad"


class Duplicates(StrEnum):
    """What ingest does with byte-identical files."""

    keep_first = "keep_first"
    keep_all = "keep_all"
    fail = "fail"


class Strategy(StrEnum):
    """How images are split into train/valid/test (pipeline.data.split)."""

    random = "random"
    group = "group"
    time = "time"
    folder = "folder"
    list = "list"


class Leakage(StrEnum):
    """What a leak between splits does: stop the split, or only warn."""

    fail = "fail"
    warn = "warn"


class TimeUnit(StrEnum):
    """How a table's time column is read: auto (ISO-8601, or s/ms by magnitude), iso, s, ms."""

    auto = "auto"
    iso = "iso"
    s = "s"
    ms = "ms"


class Device(StrEnum):
    auto = "auto"  # CUDA when available, else the CPU
    cpu = "cpu"
    cuda = "cuda"


class DataLoading(StrEnum):
    """Where training reads its batches from (pipeline.model.streaming)."""

    auto = "auto"  # memory when the train and valid splits fit in a share of the free RAM
    memory = "memory"  # each split read whole (onto the GPU when it fits)
    stream = "stream"  # per batch from the memory-mapped array store, by loader workers


@dataclass
class DataConfig:
    source: Source
    # Ingest's DVC dependencies (dvc.yaml), so always paths: the dataset's folder, and the
    # file that lists its images (data=folder: the folder again; data=digits: its CSV).
    root: str
    table: str
    label: Label
    label_regex: str | None
    label_delimiter: str  # task=multilabel: between the labels of one cell or folder name
    targets: list[str] | None  # task=regression: the table's numeric target columns
    split_folders: bool
    allow_outside_root: bool
    extensions: list[str]
    image_size: int
    channels: int
    resize: Resize
    background: list[int]
    max_pixels: int
    max_bad_fraction: float
    duplicates: Duplicates


@dataclass
class SplitConfig:
    strategy: Strategy
    valid_pct: float
    test_pct: float
    seed: int
    group_regex: str | None
    list_file: str | None
    leakage: Leakage
    time_unit: TimeUnit


@dataclass
class ModelConfig:
    arch: str
    widths: list[int] | None
    dropout: float
    # null, torchvision's named weights (DEFAULT, IMAGENET1K_V1, ...), a local file
    # (.safetensors or a state dict) or runs:/<run id> of an earlier training run.
    weights: str | None
    # task=regression: [low, high] in the targets' units; the output is squashed into it
    # with a scaled sigmoid (fastai's y_range). null = unbounded.
    y_range: list[float] | None

    def __post_init__(self) -> None:
        """A range the type cannot say, checked where the types are (validated())."""
        if not 0 <= self.dropout < 1:
            raise StagewiseError(
                f"model.dropout={self.dropout}: must be in [0, 1), the fraction of features "
                "dropped before the last layer"
            )


@dataclass
class AugmentConfig:
    rotate: float
    translate: float
    scale: float
    flip: bool
    crop: float
    brightness: float
    contrast: float


@dataclass
class FineTuneConfig:
    freeze_epochs: int
    lr_mult: float
    layer_groups: int


@dataclass
class EarlyStoppingConfig:
    monitor: str  # an epoch metric of the task (pipeline.tasks.kinds checks it)
    patience: int
    keep_best: bool


@dataclass
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    pct_start: float
    label_smoothing: float
    device: Device
    # Processes training with DDP: a count ("1", "2", ...) or "auto" (every visible GPU, else
    # 1). A string, as "auto" is not an int; pipeline.train.distributed parses it.
    devices: str
    sync_bn: bool  # BatchNorm statistics over the global batch (CUDA only)
    augment: AugmentConfig
    fine_tune: FineTuneConfig
    early_stopping: EarlyStoppingConfig
    overfit_patience: int
    deterministic: bool
    cpu_threads: int  # torch's intra-op threads on the CPU; 0 = torch's default
    checkpoint_every_s: float  # seconds between checkpoint writes; 0 = every epoch
    resume: bool
    compile: bool
    overfit_one_batch: bool
    data_loading: DataLoading
    loader_workers: int  # processes that read streamed batches; 0 = the training process
    activation_stats: bool  # record activations, gradient norms, filters, Grad-CAM (looks only)


# Settings that say how a model is trained, not which model results: they are left out of
# the digests that identify a model configuration (checkpoints, the holdout ledger).
HOW_TO_RUN = (
    "device", "devices", "cpu_threads", "checkpoint_every_s", "resume", "compile",
    "overfit_one_batch", "data_loading", "loader_workers", "activation_stats",
)  # fmt: skip


@dataclass
class EvalConfig:
    batch_size: int
    top_k: int
    top_losses: int
    allow_test_sweep: bool
    register_as: str | None
    register_min_accuracy: float
    tta: int
    threshold: float  # task=multilabel: a label is predicted when its probability reaches it
    choose_threshold: bool


@dataclass
class PredictConfig:
    input: str | None
    output: str
    model_dir: str


@dataclass
class ServeConfig:
    model: str | None
    host: str
    port: int
    max_request_mb: float
    max_rows: int
    max_request_megapixels: float
    max_image_megapixels: float
    max_json_values: int

    def __post_init__(self) -> None:
        """Ranges the types cannot say (a limit of 0 would refuse every request)."""
        if not 1 <= self.port <= 65535:
            raise StagewiseError(f"serve.port={self.port}: must be a TCP port, 1..65535")
        limits = ("max_request_mb", "max_rows", "max_request_megapixels", "max_image_megapixels",
                  "max_json_values")  # fmt: skip
        for key in limits:
            if not getattr(self, key) > 0:
                raise StagewiseError(
                    f"serve.{key}={getattr(self, key)}: must be above 0 (see conf/serve/default.yaml)"
                )
        if self.max_image_megapixels > self.max_request_megapixels:
            raise StagewiseError(
                f"serve.max_image_megapixels={self.max_image_megapixels} is above "
                f"serve.max_request_megapixels={self.max_request_megapixels}: one image would be "
                "allowed more than a whole request"
            )


@dataclass
class CompareConfig:
    sweep: str | None
    metric: str


class Pruner(StrEnum):
    """What stops hopeless trials of stages.tune after an epoch (Optuna's pruners)."""

    none = "none"
    median = "median"
    hyperband = "hyperband"


@dataclass
class TuneConfig:
    trials: int
    max_failed_trials: int
    study: str
    storage: str | None  # an SQLAlchemy URL; None = mlruns/optuna.db
    seed: int
    startup_trials: int
    pruner: Pruner
    warmup_epochs: int
    heartbeat_s: int
    retries: int
    # config key -> {low, high[, log, step]} or {choices}; checked by pipeline.train.tune
    space: dict[str, Any]


@dataclass
class SweepConfig:
    # A sweep job (Hydra multirun, stages.tune trial) whose job key matches a FINISHED
    # training run reuses it instead of training (pipeline.tracking.reuse). No stage's
    # param: turning it off retrains nothing that DVC tracks.
    reuse: bool


@dataclass
class TrackingConfig:
    experiment: str
    # Also log CPU/GPU/memory use every few seconds (MLflow system metrics).
    system_metrics: bool


@dataclass
class Config:
    task: Task
    data: DataConfig
    split: SplitConfig
    model: ModelConfig
    train: TrainConfig
    eval: EvalConfig
    predict: PredictConfig
    serve: ServeConfig
    compare: CompareConfig
    tune: TuneConfig
    sweep: SweepConfig
    tracking: TrackingConfig
    seed: int


DEFINING = ("task", "data", "split", "model", "train", "seed")


def to_dict(cfg: Config) -> dict:
    """The config as plain dicts, lists, strings and numbers, as params.yaml has it: each Enum
    member becomes its string (YAML dumpers, e.g. MLflow's log_dict, write a str subclass
    as a Python object)."""

    def plain(items: list[tuple[str, object]]) -> dict:
        return {k: str(v) if isinstance(v, Enum) else v for k, v in items}

    return asdict(cfg, dict_factory=plain)


def defining_config(cfg: Config) -> dict:
    """The parts of the config that decide which model training produces."""
    defining = {k: v for k, v in to_dict(cfg).items() if k in DEFINING}
    defining["train"] = {k: v for k, v in defining["train"].items() if k not in HOW_TO_RUN}
    return defining


def config_digest(cfg: Config, **extra: object) -> str:
    """Digest of what defines the model (and of extra, e.g. the data's hashes); evaluation,
    prediction and tracking settings and how training was run (device, resume) do not count."""
    text = json.dumps({**defining_config(cfg), **extra}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
