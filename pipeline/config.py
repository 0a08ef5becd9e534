"""Schema of params.yaml: every key a stage may read, with its type.

The values live in conf/ (composed into params.yaml); these dataclasses only say which keys
exist and what type each has, so a mistyped or unknown key fails before any work starts.
Fields without a default must be present in params.yaml.
"""

import hashlib
import json
from dataclasses import asdict, dataclass, field


@dataclass
class DataConfig:
    source: str
    root: str | None
    table: str | None
    label: str
    label_regex: str | None
    split_folders: bool
    allow_outside_root: bool
    extensions: list[str]
    image_size: int
    channels: int
    resize: str
    background: list[int]
    max_pixels: int
    max_bad_fraction: float
    duplicates: str


@dataclass
class SplitConfig:
    strategy: str
    valid_pct: float
    test_pct: float
    seed: int
    group_regex: str | None
    list_file: str | None
    leakage: str
    time_unit: str


@dataclass
class ModelConfig:
    arch: str
    widths: list[int] | None
    dropout: float
    # null, torchvision's named weights (DEFAULT, IMAGENET1K_V1, ...), a local file
    # (.safetensors or a state dict) or runs:/<run id> of an earlier training run.
    weights: str | None = None


@dataclass
class AugmentConfig:
    rotate: float
    translate: float
    scale: float
    flip: bool
    crop: float = 1.0
    brightness: float = 0.0
    contrast: float = 0.0


@dataclass
class FineTuneConfig:
    freeze_epochs: int = 0
    lr_mult: float = 100.0
    layer_groups: int = 3


@dataclass
class EarlyStoppingConfig:
    monitor: str = "valid_loss"
    patience: int = 0
    keep_best: bool = False


@dataclass
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    pct_start: float
    label_smoothing: float
    device: str
    augment: AugmentConfig = field(default_factory=lambda: AugmentConfig(0.0, 0.0, 0.0, False))
    fine_tune: FineTuneConfig = field(default_factory=FineTuneConfig)
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    overfit_patience: int = 3
    deterministic: bool = False
    cpu_threads: int = 1
    checkpoint_every_s: float = 60.0
    resume: bool = False
    compile: bool = False
    overfit_one_batch: bool = False


# Settings that say how a model is trained, not which model results: they are left out of
# the digests that identify a model configuration (checkpoints, the holdout ledger).
HOW_TO_RUN = (
    "device", "cpu_threads", "checkpoint_every_s", "resume", "compile", "overfit_one_batch",
)  # fmt: skip


@dataclass
class EvalConfig:
    batch_size: int
    top_k: int
    top_losses: int
    allow_test_sweep: bool
    register_as: str | None
    register_min_accuracy: float
    tta: int = 0


@dataclass
class PredictConfig:
    input: str | None
    output: str
    model_dir: str


@dataclass
class CompareConfig:
    sweep: str | None
    metric: str


@dataclass
class TrackingConfig:
    experiment: str
    # Also log CPU/GPU/memory use every few seconds (MLflow system metrics).
    system_metrics: bool = False


@dataclass
class Config:
    data: DataConfig
    split: SplitConfig
    model: ModelConfig
    train: TrainConfig
    eval: EvalConfig
    predict: PredictConfig
    compare: CompareConfig
    tracking: TrackingConfig
    seed: int


DEFINING = ("data", "split", "model", "train", "seed")


def defining_config(cfg: Config) -> dict:
    """The parts of the config that decide which model training produces."""
    defining = {k: v for k, v in asdict(cfg).items() if k in DEFINING}
    defining["train"] = {k: v for k, v in defining["train"].items() if k not in HOW_TO_RUN}
    return defining


def config_digest(cfg: Config, **extra: object) -> str:
    """Digest of what defines the model (and of extra, e.g. the data's hashes); evaluation,
    prediction and tracking settings and how training was run (device, resume) do not count."""
    text = json.dumps({**defining_config(cfg), **extra}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
