"""The fit loop: for each epoch, train one pass, evaluate, report, with one-cycle AdamW.

Data lives on the training device as uint8 tensors; shuffling, augmentation and
normalization are batch tensor ops there. On CUDA the model runs channels_last under bf16
autocast; on the CPU the same code runs in float32. Same seed + same data on the CPU gives
identical weights and metrics.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import TrainConfig
from pipeline.errors import StagewiseError
from pipeline.progress import progress
from pipeline.transforms import is_identity, normalize, random_affine, to_float

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Batches:
    """A split held on the training device: uint8 images (N x H x W x C) and class indices."""

    images: torch.Tensor
    targets: torch.Tensor

    @classmethod
    def from_numpy(cls, images: np.ndarray, targets: np.ndarray, device: torch.device) -> "Batches":
        return cls(
            torch.from_numpy(np.ascontiguousarray(images)).to(device, non_blocking=True),
            torch.tensor(np.asarray(targets), dtype=torch.int64).to(device, non_blocking=True),
        )

    def __len__(self) -> int:
        return len(self.targets)


@dataclass(frozen=True)
class Normalizer:
    """Turns a uint8 batch into the model's input with the training split's statistics."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def create(cls, mean: list[float], std: list[float], device: torch.device) -> "Normalizer":
        # A constant channel (std 0) must not divide by zero.
        std_t = torch.tensor(std, dtype=torch.float32).clamp_min(1e-6)
        return cls(torch.tensor(mean, dtype=torch.float32, device=device), std_t.to(device))

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return normalize(to_float(batch), self.mean, self.std)


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    train_loss: float
    valid_loss: float
    valid_accuracy: float
    valid_error_rate: float
    lr: float
    epoch_seconds: float

    def metrics(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if k != "epoch"}


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise StagewiseError(f"train.device={name!r}: use auto, cpu or cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise StagewiseError(
            "train.device=cuda but no CUDA GPU is visible; use train.device=auto or cpu"
        )
    return torch.device(name)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
    )


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if device.type == "cuda" else model


def check_train_config(cfg: TrainConfig, n_train: int) -> None:
    if cfg.epochs < 1:
        raise StagewiseError(f"train.epochs={cfg.epochs}: must be at least 1")
    if cfg.batch_size < 2:
        raise StagewiseError(f"train.batch_size={cfg.batch_size}: must be at least 2 (BatchNorm)")
    if cfg.lr <= 0:
        raise StagewiseError(f"train.lr={cfg.lr}: must be positive")
    if not 0 < cfg.pct_start < 1:
        raise StagewiseError(f"train.pct_start={cfg.pct_start}: must be in (0, 1)")
    if n_train < 2:
        raise StagewiseError(f"the train split has {n_train} image(s); training needs at least 2")


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches only (the last partial batch is dropped, as fastai does), at least one."""
    return max(n // batch_size, 1)


def fit(
    model: nn.Module,
    train: Batches,
    valid: Batches,
    cfg: TrainConfig,
    normalizer: Normalizer,
    seed: int,
    on_epoch: Callable[[EpochResult], None] = lambda result: None,
) -> list[EpochResult]:
    """Train model on train with one-cycle AdamW for cfg.epochs, evaluating on valid each epoch."""
    check_train_config(cfg, len(train))
    device = train.images.device
    generator = torch.Generator(device=device).manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=cfg.lr,
        total_steps=cfg.epochs * steps_per_epoch(len(train), cfg.batch_size),
        pct_start=cfg.pct_start,
    )
    history = []
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        train_loss = train_one_epoch(model, train, cfg, normalizer, optimizer, scheduler, generator)
        valid_loss, predicted = evaluate(model, valid, normalizer, cfg.batch_size * 4)
        accuracy = float((predicted == valid.targets.cpu()).float().mean())
        result = EpochResult(
            epoch=epoch,
            train_loss=train_loss,
            valid_loss=valid_loss,
            valid_accuracy=accuracy,
            valid_error_rate=1.0 - accuracy,
            lr=scheduler.get_last_lr()[0],
            epoch_seconds=time.perf_counter() - start,
        )
        log.info(
            "epoch %d/%d  train_loss %.4f  valid_loss %.4f  valid_accuracy %.4f  (%.1fs)",
            epoch,
            cfg.epochs,
            train_loss,
            valid_loss,
            accuracy,
            result.epoch_seconds,
        )
        on_epoch(result)
        history.append(result)
    return history


def train_one_epoch(
    model: nn.Module,
    data: Batches,
    cfg: TrainConfig,
    normalizer: Normalizer,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generator: torch.Generator,
) -> float:
    """One pass over shuffled full batches; returns the mean training loss."""
    model.train()
    device = data.images.device
    order = torch.randperm(len(data), generator=generator, device=device)
    n_steps = steps_per_epoch(len(data), cfg.batch_size)
    total = torch.zeros((), device=device)
    for step in progress(range(n_steps), desc="train", total=n_steps, off_terminal=False):
        idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
        x = to_float(data.images[idx])
        if not is_identity(cfg.augment):
            x = random_affine(x, cfg.augment, generator)
        x = normalize(x, normalizer.mean, normalizer.std)
        with autocast(device):
            loss = F.cross_entropy(model(x), data.targets[idx], label_smoothing=cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += loss.detach()
    return float(total) / n_steps  # one device sync per epoch, not per step


@torch.no_grad()
def predict_logits(
    model: nn.Module, images: torch.Tensor, normalizer: Normalizer, batch_size: int
) -> torch.Tensor:
    """Logits (float32, on the CPU) for N x H x W x C uint8 images already on the device."""
    model.eval()
    device = images.device
    outputs = []
    for start in range(0, len(images), batch_size):
        with autocast(device):
            outputs.append(model(normalizer(images[start : start + batch_size])).float())
    return torch.cat(outputs).cpu() if outputs else torch.empty(0)


def evaluate(
    model: nn.Module, data: Batches, normalizer: Normalizer, batch_size: int
) -> tuple[float, torch.Tensor]:
    """(mean cross-entropy loss, predicted class per image) on a split."""
    logits = predict_logits(model, data.images, normalizer, batch_size)
    loss = F.cross_entropy(logits, data.targets.cpu()).item()
    return loss, logits.argmax(dim=1)
