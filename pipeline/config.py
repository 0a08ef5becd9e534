"""Schema of params.yaml: every key a stage may read, with its type.

The values live in conf/ (composed into params.yaml); these dataclasses only say which keys
exist and what type each has, so a mistyped or unknown key fails before any work starts.
Fields without a default must be present in params.yaml.
"""

from dataclasses import dataclass, field


@dataclass
class DataConfig:
    source: str
    root: str | None
    table: str | None
    label: str
    label_regex: str | None
    split_folders: bool
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


@dataclass
class ModelConfig:
    arch: str
    widths: list[int] | None
    dropout: float


@dataclass
class AugmentConfig:
    rotate: float
    translate: float
    scale: float
    flip: bool


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


@dataclass
class EvalConfig:
    batch_size: int
    top_k: int
    top_losses: int
    allow_test_sweep: bool
    register_as: str | None
    register_min_accuracy: float


@dataclass
class PredictConfig:
    input: str | None
    output: str
    model_dir: str


@dataclass
class CompareConfig:
    sweep: str | None
    metric: str
    lower_is_better: bool


@dataclass
class TrackingConfig:
    experiment: str


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
