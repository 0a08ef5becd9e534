"""Random augmentations of a float batch (N x C x H x W in [0, 1]) on the training device.

Used by training and by test-time augmentation; the deterministic uint8 -> model input step
lives in pipeline/model/preprocess.py.

A DDP rank augments only its slice of the global batch (a BatchShare): the random parameters
(a few numbers per image) are drawn for the whole global batch and the slice takes its rows'
ones, so the generator's stream and every image's augmentation are those of a 1-process run.
"""

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F

from pipeline.core.config import AugmentConfig


class BatchShare(NamedTuple):
    """x holds rows start, start + 1, ... of a batch of `total` images."""

    start: int
    total: int


class Draws:
    """Per-image random numbers, drawn for the whole batch and sliced to x's rows."""

    def __init__(self, x: torch.Tensor, generator: torch.Generator, share: BatchShare | None):
        self.share = share or BatchShare(0, len(x))
        self.rows = slice(self.share.start, self.share.start + len(x))
        self.generator, self.device = generator, x.device

    def rand(self) -> torch.Tensor:
        """Values in [0, 1), one per image of x."""
        drawn = torch.rand(self.share.total, generator=self.generator, device=self.device)
        return drawn[self.rows]

    def uniform(self, limit: float) -> torch.Tensor:
        """Values drawn uniformly from [-limit, limit], one per image of x."""
        return (self.rand() * 2 - 1) * limit


def augment(
    x: torch.Tensor,
    cfg: AugmentConfig,
    generator: torch.Generator,
    share: BatchShare | None = None,
) -> torch.Tensor:
    """The configured random augmentations of a float batch in [0, 1] (of x's rows of a larger
    batch when share says which: each image is augmented as it would be within that batch)."""
    if has_geometry(cfg):
        x = random_affine(x, cfg, generator, share)
    if cfg.brightness or cfg.contrast:
        x = random_lighting(x, cfg, generator, share)
    return x


def random_affine(
    x: torch.Tensor,
    cfg: AugmentConfig,
    generator: torch.Generator,
    share: BatchShare | None = None,
) -> torch.Tensor:
    """Rotate, shift, zoom, crop and (optionally) flip each image of a float batch at random.

    One affine_grid + grid_sample for the whole batch: no per-image Python. Uncovered
    pixels become 0 (black), the background of digits and a neutral border for photos.
    """
    n, device, draw = x.shape[0], x.device, Draws(x, generator, share)
    angle = draw.uniform(math.radians(cfg.rotate))
    zoom = 1 + draw.uniform(cfg.scale)
    # affine_grid coordinates span [-1, 1], i.e. two units per image width.
    shift_x = draw.uniform(2 * cfg.translate)
    shift_y = draw.uniform(2 * cfg.translate)
    flip = torch.ones(n, device=device)
    if cfg.flip:
        flip = torch.where(draw.rand() < 0.5, -flip, flip)
    width, height = torch.ones(n, device=device), torch.ones(n, device=device)
    if cfg.crop < 1:  # random resized crop: a share of the area at an aspect ratio of 3/4..4/3
        area = cfg.crop + draw.rand() * (1 - cfg.crop)
        ratio = torch.exp(draw.uniform(math.log(4 / 3)))
        width, height = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)
        shift_x = shift_x + draw.uniform(1) * (1 - width)
        shift_y = shift_y + draw.uniform(1) * (1 - height)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [
            torch.stack([cos * width * flip, -sin * height, shift_x], 1),
            torch.stack([sin * width * flip, cos * height, shift_y], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_lighting(
    x: torch.Tensor,
    cfg: AugmentConfig,
    generator: torch.Generator,
    share: BatchShare | None = None,
) -> torch.Tensor:
    """Shift brightness and scale contrast (around each image's mean) at random."""
    draw = Draws(x, generator, share)
    brightness = draw.uniform(cfg.brightness).view(-1, 1, 1, 1)
    contrast = 1 + draw.uniform(cfg.contrast).view(-1, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + brightness).clamp(0, 1)


def has_geometry(cfg: AugmentConfig) -> bool:
    return bool(cfg.rotate or cfg.translate or cfg.scale or cfg.flip or cfg.crop < 1)


def is_identity(cfg: AugmentConfig) -> bool:
    return not (has_geometry(cfg) or cfg.brightness or cfg.contrast)
