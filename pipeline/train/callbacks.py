"""The optional parts of training, as callbacks the fit loop runs after each epoch."""

import itertools
import logging
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from pipeline.core.direction import improved
from pipeline.train.checkpoint import rng_state, save_checkpoint, serialize_checkpoint
from pipeline.train.loop import Callback, EpochResult, FitState

log = logging.getLogger(__name__)


def epochs_since_best(history: list[EpochResult], monitor: str) -> int:
    best, best_epoch = None, 0
    for result in history:
        value = result.value(monitor)
        if improved(value, best, monitor):
            best, best_epoch = value, result.epoch
    return history[-1].epoch - best_epoch if history else 0


def overfitting_since(history: list[EpochResult], patience: int) -> bool:
    """True when, over the last `patience` epochs, valid loss rose each epoch while train
    loss fell each epoch: the model learns the train split by heart."""
    if patience < 1 or len(history) <= patience:
        return False
    window = history[-patience - 1 :]
    return all(
        b.valid_loss > a.valid_loss and b.train_loss < a.train_loss
        for a, b in itertools.pairwise(window)
    )


class ReportEpoch(Callback):
    """Hands each epoch's metrics to report (e.g. MLflow, one batched call per epoch)."""

    def __init__(self, report: Callable[[EpochResult], None]) -> None:
        self.report = report

    def after_epoch(self, state: FitState) -> None:
        self.report(state.history[-1])


class KeepBest(Callback):
    """Remembers the weights of the best epoch by `monitor` and restores them at the end."""

    def __init__(self, monitor: str) -> None:
        self.monitor = monitor

    def after_epoch(self, state: FitState) -> None:
        value = state.history[-1].value(self.monitor)
        if improved(value, state.best and state.best["value"], self.monitor):
            weights = {k: v.detach().clone() for k, v in state.model.state_dict().items()}
            state.best = {"epoch": state.epoch, "value": value, "model": weights}

    def after_fit(self, state: FitState) -> None:
        if state.best and state.best["epoch"] != state.epoch:
            state.model.load_state_dict(state.best["model"])
            log.info(
                "kept the weights of epoch %d (%s %.4f)",
                state.best["epoch"],
                self.monitor,
                state.best["value"],
            )


class EarlyStopping(Callback):
    """Stops training when `monitor` has not improved for `patience` epochs."""

    def __init__(self, monitor: str, patience: int) -> None:
        self.monitor, self.patience = monitor, patience

    def after_epoch(self, state: FitState) -> None:
        if epochs_since_best(state.history, self.monitor) >= self.patience:
            state.stop = True
            log.info(
                "early stopping after epoch %d: %s has not improved for %d epochs",
                state.epoch,
                self.monitor,
                self.patience,
            )


class OverfitWatch(Callback):
    """Warns once, and calls on_flag(epoch), when the run starts overfitting."""

    def __init__(self, patience: int, on_flag: Callable[[int], None]) -> None:
        self.patience, self.on_flag = patience, on_flag

    def after_epoch(self, state: FitState) -> None:
        if overfitting_since(state.history, self.patience) and not overfitting_since(
            state.history[:-1], self.patience
        ):
            log.warning(
                "overfitting: valid loss has risen for %d epochs while train loss fell "
                "(epoch %d); regularize more (augmentation, weight decay, dropout), train "
                "fewer epochs, or use train.early_stopping",
                self.patience,
                state.epoch,
            )
            self.on_flag(state.epoch)


class Checkpoint(Callback):
    """Keeps everything needed to resume after each epoch, and writes it to disk (atomically:
    see checkpoint.py) once every_s seconds have passed since the last write, at the end, and
    when training is interrupted (Ctrl-C, SIGTERM, an error).

    An fsync'd write per epoch slowed the digits loop by 10% (8 px) to 20% (32 px;
    benchmarks/train_stage.py). Between writes the last
    finished epoch waits serialized in memory (milliseconds), so an interruption mid-epoch
    still saves it; only a SIGKILL or a power loss loses up to every_s seconds of training.
    """

    def __init__(self, path: Path, identity: str, run_id: str, every_s: float = 0.0) -> None:
        self.path, self.identity, self.run_id, self.every_s = path, identity, run_id, every_s
        self.pending: bytes | None = None
        self.written_at = time.monotonic()

    def after_epoch(self, state: FitState) -> None:
        self.pending = serialize_checkpoint(
            {
                "identity": self.identity,
                "run_id": self.run_id,
                "epoch": state.epoch,
                "model": state.model.state_dict(),
                "optimizer": state.optimizer.state_dict(),
                "scheduler": state.scheduler.state_dict(),
                "rng": rng_state(state.generator),
                "history": [asdict(r) for r in state.history],
                "best": state.best,
                "stop": state.stop,
            }
        )
        if time.monotonic() - self.written_at >= self.every_s:
            self.write()

    def after_fit(self, state: FitState) -> None:
        self.write()

    def on_interrupt(self, state: FitState) -> None:
        self.write()

    def write(self) -> None:
        if self.pending is not None:
            save_checkpoint(self.path, self.pending)
            self.pending, self.written_at = None, time.monotonic()
