"""Data sources -> manifest rows + a uint8 image array store; loading them back.

Images are decoded and resized once, here; later stages read the array store
(data/ingested/images.npy, shape N x H x W x C, uint8) through a memory map, so no stage
needs the whole dataset in RAM. The manifest has one row per stored image.
"""

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.config import DataConfig
from pipeline.errors import StagewiseError
from pipeline.progress import progress

MANIFEST_COLUMNS = ["id", "path", "index", "label", "group", "time", "sha256", "height", "width"]
SOURCES = ("digits", "folder")


@dataclass(frozen=True)
class Item:
    """One candidate image of a source, before decoding."""

    id: str
    label: str
    path: Path | None = None
    pixels: np.ndarray | None = None  # sources that ship arrays instead of files


@dataclass(frozen=True)
class Ingested:
    manifest: pd.DataFrame
    report: dict


def list_items(cfg: DataConfig) -> list[Item]:
    """All candidate images of the configured source, sorted by id."""
    if cfg.source == "digits":
        items = digits_items()
    elif cfg.source == "folder":
        items = folder_items(cfg.root, cfg.extensions)
    else:
        raise StagewiseError(f"data.source={cfg.source!r} is unknown; use one of {SOURCES}")
    if not items:
        raise StagewiseError(f"data: the {cfg.source} source has no images")
    return sorted(items, key=lambda item: item.id)


def digits_items() -> list[Item]:
    from sklearn.datasets import load_digits  # ~1 s to import: only for this source

    digits = load_digits()
    # Pixel values are 0..16; stretch them to the full 0..255 range of a uint8 image.
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    return [
        Item(id=f"digits/{i:04d}", label=str(target), pixels=image)
        for i, (image, target) in enumerate(zip(pixels, digits.target, strict=True))
    ]


def folder_items(root: str | None, extensions: list[str]) -> list[Item]:
    """root/<label>/<file>: the label is the parent folder's name (fastai's parent_label)."""
    if not root:
        raise StagewiseError(
            "data.root is not set: give data.root=<folder with one subfolder per class>"
        )
    base = Path(root).expanduser()
    if not base.is_dir():
        raise StagewiseError(
            f"data.root={root}: no such folder; point it at a folder of class subfolders"
        )
    suffixes = {ext.lower() for ext in extensions}
    items = [
        Item(id=path.relative_to(base).as_posix(), label=path.parent.name, path=path)
        for path in base.glob("*/*")
        if path.is_file() and path.suffix.lower() in suffixes
    ]
    if not items:
        raise StagewiseError(
            f"data.root={root}: no images found; expected <root>/<label>/<image> with an "
            f"extension in data.extensions ({', '.join(sorted(suffixes))})"
        )
    return items


def decode(item: Item, size: int, channels: int) -> tuple[np.ndarray, str, tuple[int, int]]:
    """The item as a size x size x channels uint8 array, the sha256 of its source bytes,
    and its original (height, width). Raises OSError/ValueError for unreadable files."""
    if item.pixels is not None:
        raw = item.pixels.tobytes()
        image = Image.fromarray(item.pixels)
    else:
        raw = item.path.read_bytes()
        with Image.open(item.path) as opened:
            opened.load()
            image = ImageOps.exif_transpose(opened)
    original = (image.height, image.width)
    image = image.convert("L" if channels == 1 else "RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8).reshape(size, size, channels)
    return array, hashlib.sha256(raw).hexdigest(), original


def ingest(cfg: DataConfig, images_path: Path) -> Ingested:
    """Decode every item into images_path (a .npy array store) and return the manifest."""
    if cfg.channels not in (1, 3):
        raise StagewiseError(f"data.channels={cfg.channels}: use 1 (greyscale) or 3 (RGB)")
    if cfg.image_size < 1:
        raise StagewiseError(
            f"data.image_size={cfg.image_size}: must be a positive number of pixels"
        )
    items = list_items(cfg)
    shape = (len(items), cfg.image_size, cfg.image_size, cfg.channels)
    scratch = images_path.with_name(images_path.name + ".partial")
    scratch.parent.mkdir(parents=True, exist_ok=True)
    store = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.uint8, shape=shape)
    rows, bad = [], []
    for item in progress(items, desc="ingest", total=len(items)):
        try:
            array, sha256, (height, width) = decode(item, cfg.image_size, cfg.channels)
        except (OSError, ValueError, UnidentifiedImageError, Image.DecompressionBombError) as e:
            bad.append({"id": item.id, "reason": f"{type(e).__name__}: {e}"})
            continue
        store[len(rows)] = array
        rows.append(
            (
                item.id,
                item.path and str(item.path),
                len(rows),
                item.label,
                None,
                None,
                sha256,
                height,
                width,
            )
        )
    del store
    manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
    try:
        check_bad_share(len(bad), len(items), cfg.max_bad_fraction)
        check_classes(manifest)
    except StagewiseError:
        scratch.unlink()
        raise
    finish_store(scratch, images_path, len(rows))
    report = {
        "source": cfg.source,
        "images": len(manifest),
        "image_shape": list(shape[1:]),
        "classes": {
            str(k): int(v) for k, v in manifest["label"].value_counts().sort_index().items()
        },
        "bad_files": bad,
    }
    return Ingested(manifest=manifest, report=report)


def check_bad_share(n_bad: int, n_total: int, max_fraction: float) -> None:
    if n_bad and n_bad / n_total > max_fraction:
        raise StagewiseError(
            f"ingest: {n_bad} of {n_total} images are unreadable ({n_bad / n_total:.1%}), more than "
            f"data.max_bad_fraction={max_fraction}; fix or remove them (run with a higher "
            f"data.max_bad_fraction to see the list in data/ingested/report.json)"
        )


def check_classes(manifest: pd.DataFrame) -> None:
    if manifest.empty:
        raise StagewiseError(
            "ingest: no image could be decoded; check data.root and the files in it"
        )
    if manifest["label"].nunique() < 2:
        raise StagewiseError(
            f"ingest: only one class ({manifest['label'].iloc[0]!r}) found; a classifier needs at least two"
        )


def finish_store(scratch: Path, final: Path, count: int) -> None:
    """Move the scratch store to its final name, dropping the rows of skipped images."""
    full = np.load(scratch, mmap_mode="r")
    if count == len(full):
        del full
        scratch.replace(final)
        return
    kept = np.lib.format.open_memmap(
        final, mode="w+", dtype=np.uint8, shape=(count, *full.shape[1:])
    )
    for chunk in iter_chunks(count, 4096):
        kept[chunk] = full[chunk]
    kept.flush()
    del kept, full
    scratch.unlink()


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
