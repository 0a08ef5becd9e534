"""The fit loop: for each epoch, train one pass, evaluate, then let the callbacks report,
keep the best weights, stop early and checkpoint.

Shuffling, augmentation and normalization are batch tensor ops on the device (see
pipeline/model/device.py for where the data and the model live, pipeline/model/streaming.py for
splits read per batch from disk). Same seed + same data on the CPU
gives identical weights and metrics, also across an interruption and a resume.
"""

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from pipeline.core.config import TrainConfig
from pipeline.core.errors import StagewiseError
from pipeline.core.progress import progress
from pipeline.model.augment import BatchShare, augment, is_identity
from pipeline.model.device import autocast, compiled
from pipeline.model.inference import predict_logits
from pipeline.model.preprocess import Normalizer
from pipeline.model.streaming import SplitData
from pipeline.tasks.heads import SINGLE_LABEL, Head
from pipeline.train import distributed
from pipeline.train.checkpoint import restore_rng
from pipeline.train.fine_tune import Phase, layer_groups, plan, set_frozen

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EpochResult:
    epoch: int
    train_loss: float
    valid_loss: float
    scores: dict[str, float]  # the task's epoch metrics (valid_accuracy, valid_rmse, ...)
    lr: float
    epoch_seconds: float

    def metrics(self) -> dict[str, float]:
        return {
            "train_loss": self.train_loss,
            "valid_loss": self.valid_loss,
            **self.scores,
            "lr": self.lr,
            "epoch_seconds": self.epoch_seconds,
        }

    def value(self, metric: str) -> float:
        return self.metrics()[metric]


@dataclass
class FitState:
    """What the loop and its callbacks share; a checkpoint saves it to resume from."""

    model: nn.Module
    generator: torch.Generator
    total_epochs: int
    epoch: int = 0
    history: list[EpochResult] = field(default_factory=list)
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    best: dict[str, Any] | None = None
    stop: bool = False


class Diverged(StagewiseError):
    """A loss or a weight became NaN or infinite: raised before the callbacks' after_epoch and
    after_fit see the epoch, so no checkpoint or model of those weights is written (the last
    good epoch's checkpoint stays). A tuning trial fails alone on it, as on any error."""


def check_finite(which: str, loss: float, epoch: int, batch: int | None = None) -> None:
    """Stop training on a non-finite loss (batch: the first one with it, from 1, if known)."""
    if math.isfinite(loss):
        return
    where = f"epoch {epoch}" + (f", batch {batch}" if batch else "")
    raise Diverged(
        f"train: the {which} loss became {loss} at {where}; lower train.lr or check the targets"
    )


def check_finite_weights(model: nn.Module, epoch: int) -> None:
    """Stop training when a weight or buffer is NaN or infinite, before the callbacks see the
    epoch: BatchNorm keeps the losses finite over running statistics that overflowed."""
    tensors = [(k, v) for k, v in model.state_dict().items() if v.is_floating_point()]
    if not tensors or torch.stack([v.isfinite().all() for _, v in tensors]).all():
        return  # one sync per epoch
    name = next(k for k, v in tensors if not v.isfinite().all())
    raise Diverged(
        f"train: the weights became NaN or infinite at epoch {epoch} ({name}); lower train.lr "
        "or check the targets"
    )


class Callback:
    """An optional part of training (reporting, early stopping, checkpoints...)."""

    def after_epoch(self, state: FitState) -> None:
        pass

    def after_fit(self, state: FitState) -> None:
        pass

    def on_interrupt(self, state: FitState) -> None:
        """Training stopped on an exception (Ctrl-C, SIGTERM's SystemExit, an error), which
        is raised again once every callback has seen it; state may be mid-epoch."""


def check_train_config(cfg: TrainConfig, n_train: int, device: torch.device) -> None:
    checks = [
        (cfg.epochs >= 1, f"train.epochs={cfg.epochs}: must be at least 1"),
        (cfg.batch_size >= 2, f"train.batch_size={cfg.batch_size}: must be at least 2 (BatchNorm)"),
        (cfg.lr > 0, f"train.lr={cfg.lr}: must be positive"),
        (0 < cfg.pct_start < 1, f"train.pct_start={cfg.pct_start}: must be in (0, 1)"),
        (
            cfg.fine_tune.freeze_epochs >= 0,
            f"train.fine_tune.freeze_epochs={cfg.fine_tune.freeze_epochs}: must be 0 or more",
        ),
        (
            cfg.fine_tune.lr_mult >= 1,
            f"train.fine_tune.lr_mult={cfg.fine_tune.lr_mult}: must be 1 or more",
        ),
        (
            cfg.fine_tune.layer_groups >= 1,
            f"train.fine_tune.layer_groups={cfg.fine_tune.layer_groups}: must be 1 or more",
        ),
        (n_train >= 2, f"the train split has {n_train} image(s); training needs at least 2"),
    ]
    for ok, message in checks:
        if not ok:
            raise StagewiseError(message)
    distributed.check_processes(cfg.batch_size, cfg.sync_bn, distributed.world_size(), device)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Full batches only (the last partial batch is dropped, as fastai does), at least one."""
    return max(n // batch_size, 1)


def fit(
    model: nn.Module,
    train: SplitData,
    valid: SplitData,
    cfg: TrainConfig,
    normalizer: Normalizer,
    seed: int,
    pretrained: bool = False,
    callbacks: tuple[Callback, ...] = (),
    resume: dict[str, Any] | None = None,
    head: Head = SINGLE_LABEL,
) -> FitState:
    """Train with one-cycle AdamW (fastai's fine_tune when pretrained), evaluating on valid
    after each epoch; continues from a checkpoint's state when given one."""
    check_train_config(cfg, len(train), train.device)
    groups = layer_groups(model, cfg.fine_tune.layer_groups)
    phases = plan(cfg, len(groups), pretrained)
    generator = torch.Generator(device=train.device).manual_seed(seed)
    state = FitState(model, generator, total_epochs=sum(p.epochs for p in phases))
    if resume:
        restore(state, resume)
    net = compiled(distributed.wrap(model, cfg.sync_bn, train.device), cfg.compile, train.device)
    try:
        first = 0
        for phase in phases:
            last = first + phase.epochs
            if state.epoch < last and not state.stop:
                set_frozen(model, groups, phase.frozen)
                state.optimizer, state.scheduler = one_cycle(groups, phase, cfg, len(train))
                if resume and state.epoch > first:  # stopped inside this phase
                    state.optimizer.load_state_dict(resume["optimizer"])
                    state.scheduler.load_state_dict(resume["scheduler"])
                while state.epoch < last and not state.stop:
                    run_epoch(state, net, train, valid, cfg, normalizer, head, callbacks)
            first = last
    except BaseException:  # Ctrl-C, SIGTERM (the stages exit through SystemExit), an error
        for callback in callbacks:
            callback.on_interrupt(state)
        raise
    for callback in callbacks:
        callback.after_fit(state)
    return state


def restore(state: FitState, checkpoint: dict[str, Any]) -> None:
    state.model.load_state_dict(checkpoint["model"])
    restore_rng(checkpoint["rng"], state.generator)
    state.epoch = checkpoint["epoch"]
    state.history = [EpochResult(**row) for row in checkpoint["history"]]
    state.best = checkpoint.get("best")
    state.stop = checkpoint.get("stop", False)
    log.info("resuming after epoch %d of %d", state.epoch, state.total_epochs)


def one_cycle(
    groups: list[list[nn.Parameter]], phase: Phase, cfg: TrainConfig, n_train: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW over the layer groups, each with its own peak learning rate, on a one-cycle schedule."""
    optimizer = torch.optim.AdamW(
        [{"params": group, "lr": lr} for group, lr in zip(groups, phase.lrs, strict=True)],
        weight_decay=cfg.weight_decay,
    )
    total_steps = phase.epochs * steps_per_epoch(n_train, cfg.batch_size)
    pct_start = phase.pct_start
    if pct_start * total_steps == 1:  # torch divides by pct_start * total_steps - 1 (4 steps, 0.25)
        pct_start *= 1.01
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=phase.lrs, total_steps=total_steps, pct_start=pct_start
    )
    return optimizer, scheduler


def run_epoch(
    state: FitState,
    net: nn.Module,
    train: SplitData,
    valid: SplitData,
    cfg: TrainConfig,
    normalizer: Normalizer,
    head: Head,
    callbacks: tuple[Callback, ...],
) -> None:
    """Train one pass, evaluate, record the epoch, then run the callbacks."""
    start = time.perf_counter()
    train_loss = train_one_epoch(net, train, cfg, normalizer, state, head)
    valid_loss, scores = evaluate(net, valid, normalizer, cfg.batch_size * 4, head)
    # the last step's update can break the weights with a finite training loss
    check_finite("validation", valid_loss, state.epoch + 1)
    check_finite_weights(state.model, state.epoch + 1)
    state.epoch += 1
    result = EpochResult(
        epoch=state.epoch,
        train_loss=train_loss,
        valid_loss=valid_loss,
        scores=scores,
        lr=state.scheduler.get_last_lr()[-1],  # the head's
        epoch_seconds=time.perf_counter() - start,
    )
    state.history.append(result)
    log.info(
        "epoch %d/%d  train_loss %.4f  valid_loss %.4f  %s  (%.1fs)",
        state.epoch,
        state.total_epochs,
        train_loss,
        valid_loss,
        "  ".join(f"{name} {value:.4f}" for name, value in scores.items()),
        result.epoch_seconds,
    )
    for callback in callbacks:
        callback.after_epoch(state)
    state.stop = distributed.agree(state.stop, train.device)  # all ranks stop together


def train_one_epoch(
    net: nn.Module,
    data: SplitData,
    cfg: TrainConfig,
    normalizer: Normalizer,
    state: FitState,
    head: Head = SINGLE_LABEL,
) -> float:
    """One pass over shuffled full batches; returns the mean training loss (over all ranks:
    every rank draws the same permutation and reads and trains on only its slice of each
    global batch)."""
    net.train()
    order = torch.randperm(len(data), generator=state.generator, device=data.device)
    n_steps = steps_per_epoch(len(data), cfg.batch_size)
    rows = distributed.shard_rows(cfg.batch_size)
    share = BatchShare(rows.start, cfg.batch_size)
    batches = [batch[rows] for batch in order[: n_steps * cfg.batch_size].split(cfg.batch_size)]
    total = torch.zeros((), device=data.device)
    # the first batch whose loss is not finite (-1: none), kept on the device like total
    first_bad = torch.full((), -1, dtype=torch.long, device=data.device)
    batches_done = progress(data.iterate(batches), desc="train", total=n_steps, off_terminal=False)
    for step, (images, targets) in enumerate(batches_done):
        loss = training_step(net, images, targets, cfg, normalizer, state.generator, share, head)
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        state.optimizer.step()
        state.scheduler.step()
        total += loss.detach()
        first_bad = torch.where((first_bad < 0) & ~loss.detach().isfinite(), step, first_bad)
    mean = float(distributed.mean_over_ranks(total)) / n_steps  # one sync per epoch, not per step
    check_finite("training", mean, state.epoch + 1, int(first_bad) + 1)
    return mean


def training_step(
    net: nn.Module,
    images: torch.Tensor,
    targets: torch.Tensor,
    cfg: TrainConfig,
    normalizer: Normalizer,
    generator: torch.Generator,
    share: BatchShare | None = None,
    head: Head = SINGLE_LABEL,
) -> torch.Tensor:
    """The loss of one augmented, normalized batch: the whole batch, or the share of a global
    batch that images hold (a DDP rank's slice).

    The augmentation's random parameters are drawn for the whole global batch and the share
    takes its rows' ones, so the random stream (and the checkpoint's generator state) and every
    image's augmentation are those a single process draws, while each rank reads and augments
    only its own images.
    """
    augmentation = None
    if not is_identity(cfg.augment):
        augmentation = lambda x: augment(x, cfg.augment, generator, share)  # noqa: E731
    x = normalizer(images, augmentation)
    with autocast(images.device):
        return head.loss(net(x), targets, cfg.label_smoothing)


def evaluate(
    model: nn.Module,
    data: SplitData,
    normalizer: Normalizer,
    batch_size: int,
    head: Head = SINGLE_LABEL,
) -> tuple[float, dict[str, float]]:
    """(mean loss, the task's epoch metrics) on a split."""
    logits = predict_logits(model, data.images, normalizer, batch_size)
    targets = data.targets.cpu()
    return head.loss(logits, targets).item(), head.epoch_scores(logits, targets)


def overfit_one_batch(
    model: nn.Module,
    data: SplitData,
    cfg: TrainConfig,
    normalizer: Normalizer,
    seed: int,
    max_steps: int = 300,
    target_loss: float = 0.05,
    head: Head = SINGLE_LABEL,
) -> list[float]:
    """Train on one batch, without augmentation, label smoothing or weight decay, until its
    loss is under target_loss; returns the losses. A model that cannot learn one batch has a
    bug (a wrong head, frozen weights, a broken input): that is an error, not a result."""
    generator = torch.Generator(device=data.device).manual_seed(seed)
    idx = torch.randperm(len(data), generator=generator, device=data.device)[: cfg.batch_size]
    images, targets = data.take(idx)
    x = normalizer(images)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(max_steps):
        with autocast(data.device):
            loss = head.loss(model(x), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if losses[-1] < target_loss or not math.isfinite(losses[-1]):
            break
    if not losses[-1] < target_loss:
        raise StagewiseError(
            f"the model could not overfit one batch of {len(targets)} images: loss "
            f"{losses[0]:.3f} -> {losses[-1]:.3f} after {len(losses)} steps at lr {cfg.lr:g} "
            f"(target < {target_loss}); check the model, its head and the labels, or train.lr"
        )
    return losses
