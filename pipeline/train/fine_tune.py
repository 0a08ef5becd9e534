"""fastai's fine_tune: layer groups, freezing, and the phases of one-cycle training.

A model trained from scratch has one phase at train.lr. A model starting from pretrained
weights first trains its new head with the body frozen (train.fine_tune.freeze_epochs; the
normalization layers stay trainable, as in fastai), then unfreezes and trains every layer
group at its own learning rate, spaced geometrically from the first layers (smallest) to
the head, so that pretrained features move less than the new head.
"""

from dataclasses import dataclass

import numpy as np
from torch import nn

from pipeline.core.config import TrainConfig
from pipeline.model.weights import head_keys

NORM_LAYERS = (
    nn.modules.batchnorm._BatchNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LayerNorm,
    nn.GroupNorm,
)


@dataclass(frozen=True)
class Phase:
    """One one-cycle schedule: its length, peak learning rate per layer group, and warm-up."""

    epochs: int
    lrs: list[float]
    pct_start: float
    frozen: bool


def layer_groups(model: nn.Module, n: int) -> list[list[nn.Parameter]]:
    """The body's parameters in n-1 consecutive groups, then the head's in the last group."""
    head_names = head_keys(model)
    named = list(model.named_parameters())
    head = [p for name, p in named if name in head_names]
    body = [p for name, p in named if name not in head_names]
    chunks = np.array_split(np.arange(len(body)), max(min(n - 1, len(body)), 1))
    return [[body[i] for i in chunk] for chunk in chunks if len(chunk)] + [head]


def discriminative_lrs(lr: float, lr_mult: float, n: int) -> list[float]:
    """n learning rates from lr/lr_mult to lr, evenly spaced on a log scale (fastai's slice)."""
    if n == 1:
        return [lr]
    return [float(x) for x in np.geomspace(lr / lr_mult, lr, n)]


def plan(cfg: TrainConfig, n_groups: int, pretrained: bool) -> list[Phase]:
    """fit_one_cycle from scratch; fastai's fine_tune from pretrained weights."""
    if not pretrained:
        return [Phase(cfg.epochs, [cfg.lr] * n_groups, cfg.pct_start, frozen=False)]
    freeze_epochs = cfg.fine_tune.freeze_epochs
    phases = []
    lr = cfg.lr
    if freeze_epochs:
        phases.append(Phase(freeze_epochs, [lr] * n_groups, 0.99, frozen=True))
        lr /= 2
    lrs = discriminative_lrs(lr, cfg.fine_tune.lr_mult, n_groups)
    return [*phases, Phase(cfg.epochs, lrs, cfg.pct_start, frozen=False)]


def set_frozen(model: nn.Module, groups: list[list[nn.Parameter]], frozen: bool) -> None:
    """Freeze (or unfreeze) every group but the head; normalization layers stay trainable."""
    for group in groups[:-1]:
        for param in group:
            param.requires_grad_(not frozen)
    for module in model.modules():
        if isinstance(module, NORM_LAYERS):
            for param in module.parameters(recurse=False):
                param.requires_grad_(True)
