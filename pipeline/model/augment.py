"""Random augmentations of a float batch (N x C x H x W in [0, 1]) on the training device.

Used by training and by test-time augmentation; the deterministic uint8 -> model input step
lives in pipeline/model/preprocess.py.
"""

import math

import torch
import torch.nn.functional as F

from pipeline.core.config import AugmentConfig


def augment(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """The configured random augmentations of a float batch in [0, 1]."""
    if has_geometry(cfg):
        x = random_affine(x, cfg, generator)
    if cfg.brightness or cfg.contrast:
        x = random_lighting(x, cfg, generator)
    return x


def uniform(n: int, limit: float, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """n values drawn uniformly from [-limit, limit]."""
    return (torch.rand(n, generator=generator, device=device) * 2 - 1) * limit


def random_affine(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Rotate, shift, zoom, crop and (optionally) flip each image of a float batch at random.

    One affine_grid + grid_sample for the whole batch: no per-image Python. Uncovered
    pixels become 0 (black), the background of digits and a neutral border for photos.
    """
    n, device = x.shape[0], x.device
    angle = uniform(n, math.radians(cfg.rotate), generator, device)
    zoom = 1 + uniform(n, cfg.scale, generator, device)
    # affine_grid coordinates span [-1, 1], i.e. two units per image width.
    shift_x = uniform(n, 2 * cfg.translate, generator, device)
    shift_y = uniform(n, 2 * cfg.translate, generator, device)
    flip = torch.ones(n, device=device)
    if cfg.flip:
        flip = torch.where(torch.rand(n, generator=generator, device=device) < 0.5, -flip, flip)
    width, height = torch.ones(n, device=device), torch.ones(n, device=device)
    if cfg.crop < 1:  # random resized crop: a share of the area at an aspect ratio of 3/4..4/3
        area = cfg.crop + torch.rand(n, generator=generator, device=device) * (1 - cfg.crop)
        ratio = torch.exp(uniform(n, math.log(4 / 3), generator, device))
        width, height = (area * ratio).sqrt().clamp(max=1), (area / ratio).sqrt().clamp(max=1)
        shift_x = shift_x + uniform(n, 1, generator, device) * (1 - width)
        shift_y = shift_y + uniform(n, 1, generator, device) * (1 - height)
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
    x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator
) -> torch.Tensor:
    """Shift brightness and scale contrast (around each image's mean) at random."""
    n, device = x.shape[0], x.device
    brightness = uniform(n, cfg.brightness, generator, device).view(-1, 1, 1, 1)
    contrast = 1 + uniform(n, cfg.contrast, generator, device).view(-1, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + brightness).clamp(0, 1)


def has_geometry(cfg: AugmentConfig) -> bool:
    return bool(cfg.rotate or cfg.translate or cfg.scale or cfg.flip or cfg.crop < 1)


def is_identity(cfg: AugmentConfig) -> bool:
    return not (has_geometry(cfg) or cfg.brightness or cfg.contrast)
