"""uint8 images -> model input: the one home of the step every consumer shares.

Training, evaluation, lr-find, test-holdout, `stages.predict`, the packaged MLflow model and
the served model all turn uint8 N x H x W x C batches into the model's normalized float input
here, with the training split's statistics, so every consumer sees images exactly as the
model was trained on them. Permuting N x H x W x C to N x C x H x W gives channels_last
strides for free.
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch


def to_float(batch: torch.Tensor) -> torch.Tensor:
    """N x H x W x C uint8 -> N x C x H x W float32 in [0, 1], channels_last in memory."""
    return batch.permute(0, 3, 1, 2).float().div_(255.0)


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std per channel; mean and std are 1-D tensors of length C in [0, 1] units."""
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


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

    def __call__(
        self,
        batch: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The model's input for a uint8 batch; transform (augmentation) sees the float batch
        in [0, 1] before it is normalized."""
        x = to_float(batch.to(self.mean.device, non_blocking=True))
        if transform is not None:  # resampling returns a plain N x C x H x W tensor
            x = transform(x).contiguous(memory_format=torch.channels_last)
        return normalize(x, self.mean, self.std)
