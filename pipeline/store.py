"""The ingested dataset on disk, read back: the manifest and the uint8 array store.

Every stage after ingest reads data through here (and so does not depend on the decoding
code): images as a read-only memory map, never the whole dataset in RAM.
"""

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import StagewiseError


def load_manifest(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise StagewiseError(f"{path} is missing: run `dvc repro ingest` first")
    return pd.read_parquet(path)


def load_images(path: Path) -> np.ndarray:
    """The array store as a read-only memory map (N x H x W x C, uint8)."""
    if not path.exists():
        raise StagewiseError(f"{path} is missing: run `dvc repro ingest` first")
    return np.load(path, mmap_mode="r")


def iter_chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def class_names(manifest: pd.DataFrame) -> list[str]:
    """The classes in a fixed order: a model's output i is class_names(...)[i]."""
    return sorted(manifest["label"].unique())
