"""Splits larger than memory: batches read from the memory-mapped array store by DataLoader
workers (into pinned memory on CUDA), then copied to the device, where augmentation and
normalization run as they do for in-memory data.

The loop chooses every batch's indices from its seeded permutation and the loader only reads
them, so the same seed gives the same batches, and the same weights, streamed or in memory; a
DDP rank is handed only its slice of each global batch's indices, and reads only those rows.
"""

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import torch
from torch.utils.data import DataLoader, Dataset

from pipeline.core.config import DataLoading
from pipeline.core.errors import StagewiseError
from pipeline.data.split import SplitRows
from pipeline.data.store import load_images
from pipeline.model.device import Batches

log = logging.getLogger(__name__)

# Share of the available RAM the train and valid splits may take before auto streams them
# (the rest is for the model, the optimizer and the batches in flight).
MEMORY_SHARE = 0.5


def keep_in_memory(setting: DataLoading, nbytes: int) -> bool:
    """Whether splits of nbytes are read whole into memory (else streamed)."""
    if setting != DataLoading.auto:
        return setting == DataLoading.memory
    available = psutil.virtual_memory().available
    fits = nbytes <= MEMORY_SHARE * available
    if not fits:
        log.info(
            "the train and valid splits (%.1f GB) exceed %.0f%% of the available RAM "
            "(%.1f GB): streaming them from the array store",
            nbytes / 1e9,
            MEMORY_SHARE * 100,
            available / 1e9,
        )
    return fits


class StoreRows(Dataset):
    """Some rows of the array store as uint8 tensors, read on indexing: store[[3, 1]] or
    store[0:64] reads only those images. The memory map opens lazily in each process, so a
    DataLoader worker receives the path and row numbers, never the array."""

    def __init__(self, store: Path, rows: np.ndarray):
        self.store = store
        self.rows = rows
        self._images: np.ndarray | None = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_images": None}

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.rows), *self.images.shape[1:])

    @property
    def images(self) -> np.ndarray:
        if self._images is None:
            self._images = load_images(self.store)
        return self._images

    def __getitem__(self, key: slice | Sequence[int] | torch.Tensor) -> torch.Tensor:
        rows = self.rows[key] if isinstance(key, slice) else self.rows[np.asarray(key)]
        return torch.from_numpy(self.images[rows])  # fancy indexing copies: a writable array


@dataclass(frozen=True)
class StreamedBatches:
    """A split served like Batches, read from the array store per batch."""

    images: StoreRows
    targets: torch.Tensor  # on the CPU: small beside the images
    device: torch.device
    workers: int  # DataLoader worker processes; 0 = read in this process

    def __len__(self) -> int:
        return len(self.targets)

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and targets at idx, on the training device."""
        idx = idx.cpu()
        return self.images[idx].to(self.device), self.targets[idx].to(self.device)

    def iterate(self, index_batches: Sequence[torch.Tensor]) -> Iterator[tuple[torch.Tensor, ...]]:
        """The batches at each of index_batches, in order, read ahead by the workers."""
        batches = [idx.cpu() for idx in index_batches]
        loader = DataLoader(
            self.images,
            sampler=batches,  # the loop's order: the loader does no shuffling of its own
            batch_size=None,  # each index is a whole batch of rows
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
            # Its own generator: starting the loader draws a worker seed, which would
            # otherwise come from torch's global one and shift dropout's random numbers.
            generator=torch.Generator(),
        )
        for idx, images in zip(batches, loader, strict=True):
            yield (
                images.to(self.device, non_blocking=True),
                self.targets[idx].to(self.device, non_blocking=True),
            )


SplitData = Batches | StreamedBatches


def split_data(rows: SplitRows, device: torch.device, in_memory: bool, workers: int) -> SplitData:
    """A split to train on: read whole (on the device when it fits) or streamed."""
    if in_memory:
        return Batches.from_numpy(rows.read(), rows.targets, device)
    if workers < 0:
        raise StagewiseError(f"train.loader_workers={workers}: use 0 (no workers) or more")
    return StreamedBatches(
        StoreRows(rows.store, rows.rows), torch.tensor(rows.targets), device, workers
    )
