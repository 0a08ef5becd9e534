"""The ingested dataset on disk, read back: the manifest and the uint8 array store.

Every stage after ingest reads data through here (and so does not depend on the decoding
code): images as a read-only memory map, never the whole dataset in RAM.
"""

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.errors import StagewiseError, first_line


def load_manifest(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise StagewiseError(f"{path} is missing: run `dvc repro ingest` first")
    return pd.read_parquet(path)


def write_manifest(path: Path, manifest: pd.DataFrame, metadata: dict[str, str]) -> None:
    """The manifest as parquet, metadata (text -> text) in the file's key-value metadata: what
    made the store (pipeline.data.ingest), in the file itself, so equal inputs give equal bytes."""
    table = pa.Table.from_pandas(manifest, preserve_index=False)
    extra = {f"stagewise.{key}": value for key, value in metadata.items()}
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, **extra}), path)


def manifest_metadata(path: Path) -> dict[str, str]:
    """The metadata write_manifest stored (empty for a manifest written without)."""
    stored = pq.read_schema(path).metadata or {}
    prefix = b"stagewise."
    return {
        key[len(prefix) :].decode(): value.decode()
        for key, value in stored.items()
        if key.startswith(prefix)
    }


def load_images(path: Path) -> np.ndarray:
    """The array store as a read-only memory map (N x H x W x C, uint8)."""
    if not path.exists():
        raise StagewiseError(f"{path} is missing: run `dvc repro ingest` first")
    try:
        return np.load(path, mmap_mode="r")
    except OSError as e:
        raise StagewiseError(
            f"{path} cannot be read ({e.strerror or e}); rerun ingest: dvc repro -f ingest"
        ) from None
    except (ValueError, EOFError) as e:
        # numpy's words for a cut-off file: "mmap length is greater than file size" (rows
        # missing), "EOF: reading array header", "No data left in file" (empty)
        raise StagewiseError(
            f"{path} is truncated or corrupt ({first_line(e)}); rerun ingest: dvc repro -f ingest"
        ) from None


def iter_chunks(n: int, size: int) -> Iterator[slice]:
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


def images_sha256(images: np.ndarray) -> str:
    """sha256 of a store's rows (not its header), read in chunks: StoreWriter.sha256 of the
    same images."""
    digest = hashlib.sha256()
    for rows in iter_chunks(len(images), 1024):
        digest.update(np.ascontiguousarray(images[rows]))
    return digest.hexdigest()


class StoreWriter:
    """Appends equally-shaped uint8 images to a .npy array store, streaming.

    Rows go to a headerless scratch file with plain writes (not a memory map, whose dirty
    pages would count against the process and grow with the dataset); finish() prepends the
    .npy header for the final row count and moves the result into place atomically. A
    memory map of the store it replaces (ingest reuses its rows) keeps reading the old file.
    """

    def __init__(self, path: Path, image_shape: tuple[int, ...]):
        self.path = path
        self.image_shape = image_shape
        self.count = 0
        self.digest = hashlib.sha256()
        self.scratch = path.with_name(path.name + ".rows")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = open(self.scratch, "wb")  # noqa: SIM115 - closed by finish() or discard()

    def append(self, image: np.ndarray) -> None:
        row = np.ascontiguousarray(image, dtype=np.uint8).tobytes()
        self.file.write(row)
        self.digest.update(row)
        self.count += 1

    def sha256(self) -> str:
        """sha256 of the rows appended so far (images_sha256 of the finished store)."""
        return self.digest.hexdigest()

    def finish(self) -> None:
        self.file.close()
        final = self.path.with_name(self.path.name + ".partial")
        header = {"descr": "|u1", "fortran_order": False, "shape": (self.count, *self.image_shape)}
        with open(final, "wb") as out, open(self.scratch, "rb") as rows:
            np.lib.format.write_array_header_1_0(out, header)
            shutil.copyfileobj(rows, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(final, self.path)
        self.scratch.unlink()

    def discard(self) -> None:
        self.file.close()
        self.scratch.unlink(missing_ok=True)

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(self, *exc_info) -> None:
        """Without finish() (an error, Ctrl-C), nothing is left behind."""
        if self.scratch.exists():
            self.discard()
