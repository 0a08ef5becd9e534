"""Seeing inside the network while it trains: fastai's ActivationStats (with_hist=True) and
per-layer gradient norms, as a callback (train.activation_stats).

Forward hooks record each hooked layer's output mean, std, share near zero and histogram on
every few training batches; parameter hooks add up each layer's gradient norm on every step.
The hooks only read tensors (detached copies): the weights are the same with them on or off.
Everything stays on the training device until the end of an epoch (one copy to the host per
epoch, no synchronization per batch). The callback writes nothing: the train stage asks it for
rows and arrays (pipeline/train/activation_report.py).
"""

from functools import partial

import numpy as np
import torch
from torch import nn

from pipeline.train.loop import Callback, FitState

# Training batches between two records (the first batch is always recorded: the colorful
# dimension's most telling part is how the first batches move the activations).
RECORD_EVERY = 4
# fastai's histogram: torch.histc(output.float(), 40, 0, 10); values outside [0, 10] are left out.
HIST_BINS, HIST_MIN, HIST_MAX = 40, 0.0, 10.0
# "Near zero", as fastai's dead chart (course part 2): the first two bins, [0, 0.5), as a share
# of the values the histogram holds.
NEAR_ZERO_BINS = 2
STAT_NAMES = ("mean", "std", "near_zero")


def hooked_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers whose outputs are recorded, by module path: the model's top-level children
    that hold parameters, a torchvision stage (a Sequential of blocks, e.g. resnet's layer1)
    opened into its blocks.

    Why blocks and not every module: small_cnn's children are conv blocks (conv, BatchNorm,
    ReLU) and resnet's blocks end in a ReLU, so their outputs are activations, what the
    colorful dimension's [0, 10] histogram is made for; a hook on each Conv2d or BatchNorm
    would record pre-activations (half of them below zero, outside the histogram) at three
    times the cost. Pooling, flatten and dropout hold no parameters and only reshape what the
    layer before them produced. Every parameter sits in one hooked layer, so the gradient
    norms cover the whole model.
    """
    layers: dict[str, nn.Module] = {}
    for name, child in model.named_children():
        if not has_parameters(child):
            continue
        if isinstance(child, nn.Sequential) and all(has_children(block) for block in child):
            layers.update({f"{name}.{n}": block for n, block in child.named_children()})
        else:
            layers[name] = child
    return layers or {type(model).__name__: model}


def has_parameters(module: nn.Module) -> bool:
    return next(module.parameters(), None) is not None


def has_children(module: nn.Module) -> bool:
    return next(module.children(), None) is not None


def describe(layer: nn.Module) -> str:
    """A layer's kind (a Sequential by its first layer) and its input and output widths."""
    leaves = [m for m in layer.modules() if has_parameters(m) and not has_children(m)]
    kind = type(layer).__name__
    if isinstance(layer, nn.Sequential) and leaves:
        kind = f"{type(leaves[0]).__name__} block"
    widths = [m for m in leaves if isinstance(m, nn.Conv2d | nn.Linear)]
    if widths:
        first, last = widths[0], widths[-1]
        c_in = getattr(first, "in_channels", getattr(first, "in_features", 0))
        c_out = getattr(last, "out_channels", getattr(last, "out_features", 0))
        return f"{kind} {c_in}→{c_out}"
    return kind


def histogram(x: torch.Tensor) -> torch.Tensor:
    """torch.histc(x, 40, 0, 10). On CUDA with torch.use_deterministic_algorithms (train.
    deterministic) histc raises, so the counts come from a sort there instead."""
    if x.is_cuda and torch.are_deterministic_algorithms_enabled():
        return sorted_histogram(x)
    return torch.histc(x, HIST_BINS, HIST_MIN, HIST_MAX)


def sorted_histogram(x: torch.Tensor) -> torch.Tensor:
    """histc's counts from a sort and a binary search: deterministic on CUDA, and still no
    copy to the host (a fixed-size result)."""
    edges = torch.linspace(HIST_MIN, HIST_MAX, HIST_BINS + 1, device=x.device)
    ordered = x.flatten().sort().values
    below = torch.searchsorted(ordered, edges)  # values < each edge
    below[-1] = torch.searchsorted(ordered, edges[-1:], right=True)[0]  # the last bin holds max
    return below.diff().float()


def layer_stats(output: torch.Tensor) -> torch.Tensor:
    """[mean, std, share near zero, *histogram] of one layer output, on its device."""
    x = output.detach().float()
    counts = histogram(x)
    near_zero = counts[:NEAR_ZERO_BINS].sum() / counts.sum().clamp_min(1)
    return torch.cat([torch.stack([x.mean(), x.std(), near_zero]), counts])


class ActivationStats(Callback):
    """Hooks model's layers (hooked_layers) from construction until the fit ends; records
    only training batches (a module in training mode), never the valid pass."""

    def __init__(self, model: nn.Module, every: int = RECORD_EVERY) -> None:
        self.layers = hooked_layers(model)
        self.every = every
        self.batch = 0  # training forward passes seen
        self.records: list[tuple[int, int, int]] = []  # (batch, epoch, layer index) per row
        self.values = np.zeros((0, len(STAT_NAMES) + HIST_BINS), dtype=np.float32)
        self.grad_rows: list[dict] = []
        self._pending: list[tuple[int, int, torch.Tensor]] = []  # this epoch's, on the device
        n = len(self.layers)
        self._grad_sq: list[torch.Tensor | None] = [None] * n  # this step's squared norms
        self._grad_sum: list[torch.Tensor | None] = [None] * n  # this epoch's sum of norms
        self._grad_steps = [0] * n
        # torch.compiler.disable: a compiled model (train.compile) runs the hooks as plain
        # Python instead of tracing them (their counters would otherwise trigger recompiles).
        hook = torch.compiler.disable
        self._handles = [model.register_forward_pre_hook(hook(self._count))]
        for i, layer in enumerate(self.layers.values()):
            self._handles.append(layer.register_forward_hook(hook(partial(self._record, i))))
            for p in layer.parameters():
                if p.requires_grad:
                    self._handles.append(
                        p.register_post_accumulate_grad_hook(hook(partial(self._grad, i)))
                    )

    @property
    def names(self) -> list[str]:
        return list(self.layers)

    def labels(self) -> list[str]:
        """Layer names for people: module path, kind and width, e.g. 'layer1.0 (BasicBlock
        64→64)' or small_cnn's '0 (Conv2d block 1→8)'."""
        return [f"{name} ({describe(layer)})" for name, layer in self.layers.items()]

    def _count(self, module: nn.Module, args: tuple) -> None:
        if module.training:
            self._close_step()  # the previous step's gradients are all in
            self.batch += 1

    def _record(self, index: int, module: nn.Module, args: tuple, output: object) -> None:
        recorded = module.training and (self.batch - 1) % self.every == 0
        if recorded and isinstance(output, torch.Tensor):
            self._pending.append((self.batch, index, layer_stats(output)))

    def _grad(self, index: int, param: torch.Tensor) -> None:
        # The local gradient, before DDP averages it over the processes (rank 0's share).
        square = param.grad.detach().float().pow(2).sum()
        previous = self._grad_sq[index]
        self._grad_sq[index] = square if previous is None else previous + square

    def _close_step(self) -> None:
        for i, square in enumerate(self._grad_sq):
            if square is not None:
                total = self._grad_sum[i]
                self._grad_sum[i] = square.sqrt() if total is None else total + square.sqrt()
                self._grad_steps[i] += 1
                self._grad_sq[i] = None

    def after_epoch(self, state: FitState) -> None:
        self._close_step()
        if self._pending:
            values = torch.stack([v for _, _, v in self._pending]).cpu().numpy()
            self.values = np.concatenate([self.values, values])
            self.records += [(batch, state.epoch, i) for batch, i, _ in self._pending]
            self._pending = []
        sums = [s for s in self._grad_sum if s is not None]
        host = torch.stack(sums).cpu().tolist() if sums else []
        for name, total, steps in zip(self.names, self._grad_sum, self._grad_steps, strict=True):
            if total is not None:  # frozen layers (fine_tune's first phase) have no gradients
                self.grad_rows.append(
                    {"epoch": state.epoch, "layer": name, "grad_norm": host.pop(0) / steps}
                )
        self._grad_sum = [None] * len(self.layers)
        self._grad_steps = [0] * len(self.layers)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def after_fit(self, state: FitState) -> None:
        self.remove()

    def on_interrupt(self, state: FitState) -> None:
        self.remove()

    def stats_rows(self) -> list[dict]:
        """One row per record and layer: batch (1 = the fit's first training batch), epoch,
        layer, mean, std, near_zero."""
        return [
            {
                "batch": batch,
                "epoch": epoch,
                "layer": self.names[i],
                **{k: float(v) for k, v in zip(STAT_NAMES, row, strict=False)},
            }
            for (batch, epoch, i), row in zip(self.records, self.values, strict=True)
        ]

    def histogram_rows(self) -> list[dict]:
        """One row per record and layer: batch, layer and the count in each bin, named by the
        bin's lower edge (bin_0, bin_0.25, ...)."""
        width = (HIST_MAX - HIST_MIN) / HIST_BINS
        columns = [f"bin_{HIST_MIN + k * width:g}" for k in range(HIST_BINS)]
        return [
            {
                "batch": batch,
                "layer": self.names[i],
                **dict(zip(columns, map(float, row[3:]), strict=True)),
            }
            for (batch, _, i), row in zip(self.records, self.values, strict=True)
        ]

    def histograms(self) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """({layer: recorded batch numbers}, {layer: records x bins counts}), in batch order."""
        layer_of = np.array([i for _, _, i in self.records], dtype=np.int64)
        batches = np.array([b for b, _, _ in self.records], dtype=np.int64)
        counts = self.values[:, len(STAT_NAMES) :]
        return (
            {name: batches[layer_of == i] for i, name in enumerate(self.names)},
            {name: counts[layer_of == i] for i, name in enumerate(self.names)},
        )
