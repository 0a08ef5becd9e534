"""fastai's lr_find: train a few batches at exponentially growing learning rates and pick
the learning rate where the loss falls fastest and longest (the "valley" suggestion).

Run on the model exactly as training starts it: pretrained bodies frozen when fine-tuning
begins with frozen epochs, the same augmentation, batch size and weight decay.
"""

import math
from dataclasses import dataclass

import torch
from torch import nn

from pipeline.core.config import TrainConfig
from pipeline.model.preprocess import Normalizer
from pipeline.model.streaming import SplitData
from pipeline.tasks.heads import SINGLE_LABEL, Head
from pipeline.train.fine_tune import layer_groups, set_frozen
from pipeline.train.loop import steps_per_epoch, training_step


@dataclass(frozen=True)
class LrFinding:
    lrs: list[float]
    losses: list[float]  # smoothed, as fastai plots them
    suggestion: float


def lr_find(
    model: nn.Module,
    data: SplitData,
    cfg: TrainConfig,
    normalizer: Normalizer,
    seed: int,
    pretrained: bool,
    start_lr: float = 1e-7,
    end_lr: float = 10.0,
    num_it: int = 100,
    head: Head = SINGLE_LABEL,
) -> LrFinding:
    """Losses at num_it learning rates from start_lr to end_lr; stops once the loss diverges."""
    if pretrained and cfg.fine_tune.freeze_epochs:
        set_frozen(model, layer_groups(model, cfg.fine_tune.layer_groups), frozen=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=start_lr, weight_decay=cfg.weight_decay)
    generator = torch.Generator(device=data.device).manual_seed(seed)
    n_batches = steps_per_epoch(len(data), cfg.batch_size)
    order = torch.randperm(len(data), generator=generator, device=data.device)
    model.train()
    lrs, losses, average, best = [], [], 0.0, math.inf
    for i in range(num_it):
        lr = start_lr * (end_lr / start_lr) ** (i / (num_it - 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        step = i % n_batches
        if i and not step:  # a new pass over the data, freshly shuffled
            order = torch.randperm(len(data), generator=generator, device=data.device)
        images, targets = data.take(order[step * cfg.batch_size : (step + 1) * cfg.batch_size])
        loss = training_step(model, images, targets, cfg, normalizer, generator, head=head)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        average = 0.98 * average + 0.02 * loss.item()
        smoothed = average / (1 - 0.98 ** (i + 1))
        if not math.isfinite(smoothed) or smoothed > 4 * best:
            break
        best = min(best, smoothed)
        lrs.append(lr)
        losses.append(smoothed)
    return LrFinding(lrs, losses, valley(lrs, losses))


def valley(lrs: list[float], losses: list[float]) -> float:
    """fastai's valley: the longest stretch over which the loss keeps falling, and a point
    two thirds of the way down it (steep, but short of the minimum, where training breaks)."""
    n = len(losses)
    if n < 3:
        return lrs[0] if lrs else 1e-3
    run_length = [1] * n  # longest decreasing subsequence ending at each point
    max_start, max_end = 0, 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and run_length[i] < run_length[j] + 1:
                run_length[i] = run_length[j] + 1
        if run_length[max_end] < run_length[i]:
            max_end, max_start = i, i - run_length[i]
    sections = (max_end - max_start) / 3
    return lrs[max_start + int(sections) + int(sections / 2)]
