"""Where training and inference run: device choice, seeding, precision, memory layout, and
the splits as uint8 tensors on the device.

Data lives on the training device as uint8 tensors when it fits there (else in pinned host
memory, copied per batch without blocking). The model and its input are channels_last; on
CUDA it runs under bf16 autocast, optionally compiled; on the CPU the same code runs in float32.
"""

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline.core.errors import StagewiseError

log = logging.getLogger(__name__)

# Share of free GPU memory the uint8 dataset may take before it stays in host memory.
DEVICE_DATA_SHARE = 0.5


@dataclass(frozen=True)
class Batches:
    """A split as uint8 images (N x H x W x C) and class indices, served on `device`."""

    images: torch.Tensor
    targets: torch.Tensor
    device: torch.device

    @classmethod
    def from_numpy(cls, images: np.ndarray, targets: np.ndarray, device: torch.device) -> "Batches":
        images_t = torch.from_numpy(np.ascontiguousarray(images))
        targets_t = torch.from_numpy(np.array(targets))  # class indices, labels or values
        if device.type == "cuda":
            if fits_on_device(images_t.nbytes, device):
                images_t = images_t.to(device, non_blocking=True)
                targets_t = targets_t.to(device, non_blocking=True)
            else:
                log.info("the split does not fit on %s; it stays in pinned host memory", device)
                images_t, targets_t = images_t.pin_memory(), targets_t.pin_memory()
        return cls(images_t, targets_t, device)

    def __len__(self) -> int:
        return len(self.targets)

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and targets at idx, on the training device."""
        idx = idx.to(self.images.device)
        return (
            self.images[idx].to(self.device, non_blocking=True),
            self.targets[idx].to(self.device, non_blocking=True),
        )

    def iterate(self, index_batches: Sequence[torch.Tensor]) -> Iterator[tuple[torch.Tensor, ...]]:
        """The batches at each of index_batches, in order."""
        for idx in index_batches:
            yield self.take(idx)


def fits_on_device(nbytes: int, device: torch.device) -> bool:
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes < DEVICE_DATA_SHARE * free


def select_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise StagewiseError(
            "train.device=cuda but no CUDA GPU is visible; use train.device=auto or cpu"
        )
    return torch.device(name)


def device_tags(device: torch.device) -> dict[str, str]:
    """Where a run trained, for its MLflow tags: what CPU runs must share to be bit-identical
    (the kernel set torch dispatched to and the thread count) is among them."""
    return {
        "device": str(device),
        "torch.version": torch.__version__,
        "torch.cuda": str(torch.version.cuda),
        "torch.cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch.threads": str(torch.get_num_threads()),
    }


def set_cpu_threads(threads: int, device: torch.device) -> None:
    """Train on the CPU with a fixed number of intra-op threads (0 = torch's default).

    oneDNN's convolution backward, the channels-last BatchNorm statistics and MKL's matrix
    products split their sums across threads, so the weights depend on the thread count;
    fixing it here makes them independent of OMP_NUM_THREADS and of the machine's cores.
    """
    if threads < 0:
        raise StagewiseError(f"train.cpu_threads={threads}: use 0 (torch's default) or more")
    if device.type == "cpu" and threads:
        torch.set_num_threads(threads)


def seed_everything(seed: int, deterministic: bool = False) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    if deterministic:  # cuBLAS needs this set before its first use to be deterministic
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic != torch.are_deterministic_algorithms_enabled():
        # Only on a change: setting it imports torch._inductor (1.2 s of every training start).
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
    torch.backends.cudnn.benchmark = not deterministic


def autocast(device: torch.device) -> torch.autocast:
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
    )


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """On the device, channels_last: faster convolutions on CUDA and on the CPU too (oneDNN),
    see benchmarks/channels_last_cpu.py."""
    return model.to(device).to(memory_format=torch.channels_last)


def compiled(model: nn.Module, compile: bool, device: torch.device) -> nn.Module:
    """The module that runs the batches: torch.compile'd on CUDA when asked."""
    if not compile:
        return model
    if device.type != "cuda":
        log.warning("train.compile is ignored on the CPU")
        return model
    return torch.compile(model)
