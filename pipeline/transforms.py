"""Batch transforms applied on the training device: uint8 images -> normalized float input.

Defined once and shared by training, evaluation and the packaged model, so every consumer
sees images exactly as the model was trained on them. Batches arrive as N x H x W x C uint8;
permuting them to N x C x H x W gives channels_last strides for free.
"""

import math

import torch
import torch.nn.functional as F

from pipeline.config import AugmentConfig


def to_float(batch: torch.Tensor) -> torch.Tensor:
    """N x H x W x C uint8 -> N x C x H x W float32 in [0, 1], channels_last in memory."""
    return batch.permute(0, 3, 1, 2).float().div_(255.0)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std per channel; mean and std are 1-D tensors of length C in [0, 1] units."""
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def random_affine(x: torch.Tensor, cfg: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Rotate, shift, zoom and (optionally) flip each image of a float batch at random.

    One affine_grid + grid_sample for the whole batch: no per-image Python. Uncovered
    pixels become 0 (black), the background of digits and a neutral border for photos.
    """
    n = x.shape[0]

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator, device=x.device) * 2 - 1) * limit

    angle = uniform(math.radians(cfg.rotate))
    zoom = 1 + uniform(cfg.scale)
    # affine_grid coordinates span [-1, 1], i.e. two units per image width.
    shift_x, shift_y = uniform(2 * cfg.translate), uniform(2 * cfg.translate)
    flip = torch.ones(n, device=x.device)
    if cfg.flip:
        flip = torch.where(torch.rand(n, generator=generator, device=x.device) < 0.5, -flip, flip)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, shift_x], 1), torch.stack([sin * flip, cos, shift_y], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def is_identity(cfg: AugmentConfig) -> bool:
    return not (cfg.rotate or cfg.translate or cfg.scale or cfg.flip)
