"""A model ready to train: the splits and normalization on the device, the architecture
built for the dataset's classes and channels, and pretrained weights loaded when asked.

Shared by train and lr-find, so the learning rate is found for the model that is trained.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from pipeline.core.config import Config, DataConfig
from pipeline.core.io import file_md5, read_json
from pipeline.core.paths import ModelFiles, Paths
from pipeline.data.lineage import dataset_version
from pipeline.data.split import SplitRows, load_split_rows
from pipeline.model.device import (
    prepare_model,
    seed_everything,
    select_device,
    set_cpu_threads,
)
from pipeline.model.networks import ModelSpec, build_model
from pipeline.model.preprocess import Normalizer
from pipeline.model.streaming import SplitData, keep_in_memory, split_data
from pipeline.model.weights import pretrained_state, transfer
from pipeline.tasks.heads import Head
from pipeline.tasks.kinds import task_kind
from pipeline.train import distributed

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Learner:
    model: nn.Module
    spec: ModelSpec
    train: SplitData
    valid: SplitData
    normalizer: Normalizer
    device: torch.device

    @property
    def head(self) -> Head:
        return self.spec.head()

    @property
    def example(self) -> torch.Tensor:
        """A few raw validation images: the packaged model's input example."""
        return self.valid.images[:4].cpu()


# Fetches the model files of an earlier MLflow run (model.weights=runs:/<id>) into a folder;
# the stage passes tracking's, so the learner needs no tracking code.
RunModelFetcher = Callable[[str, Path], ModelFiles]


def create_learner(cfg: Config, paths: Paths, fetch_run_model: RunModelFetcher) -> Learner:
    stats = read_json(paths.normalize, "normalize-stats")
    kind = task_kind(cfg.task)
    train, valid = load_split_rows(paths, "train", kind), load_split_rows(paths, "valid", kind)
    in_memory = keep_in_memory(cfg.train.data_loading, train.nbytes + valid.nbytes)
    device = distributed.local_device(select_device(cfg.train.device))
    seed_everything(cfg.seed, cfg.train.deterministic)
    set_cpu_threads(cfg.train.cpu_threads, device)
    spec = model_spec(cfg, train, stats)
    model = build_model(spec)
    if cfg.model.weights:
        load_pretrained(model, cfg.model.weights, spec.arch, paths.home, fetch_run_model)
    return Learner(
        prepare_model(model, device),
        spec,
        split_data(train, device, in_memory, cfg.train.loader_workers),
        split_data(valid, device, in_memory, cfg.train.loader_workers),
        Normalizer.create(spec.mean, spec.std, device),
        device,
    )


def model_spec(cfg: Config, train: SplitRows, stats: dict) -> ModelSpec:
    """The model's architecture, outputs, input shape and normalization, and what its task
    needs to read the outputs, saved beside it."""
    size, _, channels = train.image_shape
    y_range = list(cfg.model.y_range) if cfg.model.y_range is not None else None
    kind = task_kind(cfg.task)
    kind.check_label_smoothing(cfg.train.label_smoothing)
    task = kind.model_fields(train.targets, cfg.eval, y_range)
    return ModelSpec(
        arch=cfg.model.arch, classes=train.classes, channels=channels, image_size=size,
        mean=stats["mean"], std=stats["std"], widths=cfg.model.widths, dropout=cfg.model.dropout,
        resize=cfg.data.resize, background=list(cfg.data.background), **task,
    )  # fmt: skip


def load_pretrained(
    model: nn.Module, source: str, arch: str, home: Path, fetch_run_model: RunModelFetcher
) -> None:
    """Pretrained weights into every layer but the new head."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        state = pretrained_state(
            source, arch, home, lambda run_id: fetch_run_model(run_id, Path(tmp))
        )
    done = transfer(model, state, source)
    adapted = f"; adapted {', '.join(done.adapted)} to the input channels" if done.adapted else ""
    log.info(
        "loaded %d tensors from %s; new head %s%s",
        done.loaded,
        source,
        ", ".join(done.new_head),
        adapted,
    )


def data_tags(paths: Paths, data: DataConfig) -> dict[str, str]:
    """DVC-style md5 of the data a model is fitted on, to match its run to dvc.lock, and the
    raw dataset's version as DVC records it (pipeline.data.lineage)."""
    return {
        **{
            f"dvc.md5.{path.relative_to(paths.root).as_posix()}": file_md5(path)
            for path in (paths.manifest, paths.split, paths.normalize)
        },
        **dataset_version(data, paths),
    }
