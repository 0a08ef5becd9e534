"""ingest: candidate images -> manifest rows + a uint8 image array store; loading them back.

Images are decoded and resized once, here, in parallel across the machine's cores; later
stages read the array store (data/ingested/images.npy, N x H x W x C uint8) through a memory
map, so no stage holds the whole dataset in RAM. The manifest has one row per stored image.
"""

import hashlib
import multiprocessing
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd

from pipeline.core.config import DataConfig
from pipeline.core.errors import StagewiseError
from pipeline.core.progress import progress
from pipeline.data.decode import (
    BadImage,
    Decoded,
    DecodeSettings,
    convert_pixels,
    decode_bytes,
)
from pipeline.data.sources import Item, list_items, path_text
from pipeline.data.store import StoreWriter
from pipeline.tasks.kinds import SINGLE_LABEL, TaskKind

MANIFEST_COLUMNS = [
    "id", "path", "index", "label", "group", "time", "folder_split", "sha256", "height", "width", "mode",
]  # fmt: skip
# Below this many files a process pool costs more than it saves.
PARALLEL_MIN_ITEMS = 64


@dataclass(frozen=True)
class Ingested:
    manifest: pd.DataFrame
    report: dict


def check_data_config(cfg: DataConfig) -> None:
    if cfg.channels not in (1, 3):
        raise StagewiseError(f"data.channels={cfg.channels}: use 1 (greyscale) or 3 (RGB)")
    if cfg.image_size < 1:
        raise StagewiseError(
            f"data.image_size={cfg.image_size}: must be a positive number of pixels"
        )
    if len(cfg.background) != 3 or not all(0 <= v <= 255 for v in cfg.background):
        raise StagewiseError(f"data.background={cfg.background}: give [r, g, b] with values 0..255")


def decode_item(item: Item, settings: DecodeSettings) -> tuple[Decoded, str] | str:
    """(decoded image, sha256 of its bytes), or the reason it is unusable. Runs in a worker."""
    try:
        if item.pixels is not None:
            raw = item.pixels.tobytes()
            height, width = item.pixels.shape[:2]
            array = convert_pixels(item.pixels, settings)
            decoded = Decoded(array, height, width, mode="L" if item.pixels.ndim == 2 else "RGB")
        else:
            raw = item.path.read_bytes()
            decoded = decode_bytes(raw, settings)
    except BadImage as e:
        return str(e)
    except OSError as e:
        return f"unreadable: {e.strerror or e}"
    return decoded, hashlib.sha256(raw).hexdigest()


def workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def decode_all(items: list[Item], settings: DecodeSettings) -> Iterator[tuple[Decoded, str] | str]:
    """decode_item over items, in order; across worker processes when it pays off."""
    task = partial(decode_item, settings=settings)
    n_workers = workers()
    if n_workers < 2 or len(items) < PARALLEL_MIN_ITEMS or items[0].pixels is not None:
        yield from map(task, items)
        return
    # Workers come from a fork server, not a fork of this process, which copies the locks its
    # threads hold and the SIGTERM handlers others installed (seen in a test process that had
    # run torch's launcher: a forked worker outlived the pool's terminate and hung the caller).
    with multiprocessing.get_context("forkserver").Pool(n_workers) as pool:
        yield from pool.imap(task, items, chunksize=16)


def ingest(cfg: DataConfig, images_path: Path, kind: TaskKind = SINGLE_LABEL) -> Ingested:
    """Decode every item into images_path (a .npy array store) and return the manifest."""
    check_data_config(cfg)
    listing = list_items(cfg, kind)
    items = listing.items
    settings = DecodeSettings(
        cfg.image_size, cfg.channels, cfg.resize, tuple(cfg.background), cfg.max_pixels
    )
    with StoreWriter(images_path, (cfg.image_size, cfg.image_size, cfg.channels)) as store:
        rows, bad, duplicates = decode_into(store, items, settings, cfg.duplicates)
        manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
        bad = listing.rejected + bad
        check_bad_share(len(bad), len(items) + len(listing.rejected), cfg.max_bad_fraction)
        check_duplicates(duplicates, cfg.duplicates)
        check_labels(manifest, kind)
        store.finish()
    report = ingest_report(cfg, manifest, bad, duplicates, kind)
    return Ingested(manifest=manifest, report=report)


def decode_into(
    store: StoreWriter, items: list[Item], settings: DecodeSettings, duplicate_policy: str
) -> tuple[list[tuple], list[dict], dict[str, list[str]]]:
    """Decode items into the store: (manifest rows, unusable files, {first id: its copies})."""
    rows, bad, first_of = [], [], {}
    duplicates: dict[str, list[str]] = {}
    outcomes = progress(decode_all(items, settings), desc="ingest", total=len(items))
    for item, outcome in zip(items, outcomes, strict=True):
        if isinstance(outcome, str):
            row = {} if item.row is None else {"row": item.row}  # where a table lists it
            bad.append({"id": item.id, **row, "reason": outcome})
            continue
        decoded, sha256 = outcome
        if sha256 in first_of:
            duplicates.setdefault(first_of[sha256], []).append(item.id)
            if duplicate_policy != "keep_all":
                continue
        first_of.setdefault(sha256, item.id)
        store.append(decoded.array)
        rows.append((item.id, item.path and path_text(item.path), len(rows), item.label, item.group, item.time,
                     item.folder_split, sha256, decoded.height, decoded.width, decoded.mode))  # fmt: skip
    return rows, bad, duplicates


def ingest_report(
    cfg: DataConfig, manifest: pd.DataFrame, bad: list[dict], duplicates: dict, kind: TaskKind
) -> dict:
    return {
        "source": cfg.source,
        "images": len(manifest),
        "image_shape": [cfg.image_size, cfg.image_size, cfg.channels],
        kind.counts_key: kind.counts(manifest["label"]),
        "original_modes": dict(sorted(Counter(manifest["mode"]).items())),
        "bad_files": sorted(bad, key=lambda entry: entry["id"]),
        "duplicates": [
            {"kept": first, "same_bytes": same} for first, same in sorted(duplicates.items())
        ],
        "duplicate_policy": cfg.duplicates,
    }


def check_bad_share(n_bad: int, n_total: int, max_fraction: float) -> None:
    if n_bad and n_bad / n_total > max_fraction:
        raise StagewiseError(
            f"ingest: {n_bad} of {n_total} files are unusable ({n_bad / n_total:.1%}), more than "
            f"data.max_bad_fraction={max_fraction}; fix or remove them (run with a higher "
            f"data.max_bad_fraction to get the list with reasons in data/ingested/report.json)"
        )


def check_duplicates(duplicates: dict[str, list[str]], policy: str) -> None:
    if duplicates and policy == "fail":
        first, same = next(iter(sorted(duplicates.items())))
        raise StagewiseError(
            f"ingest: {sum(map(len, duplicates.values()))} file(s) are byte-identical copies of others "
            f"(e.g. {', '.join(same[:3])} = {first}); remove them or set data.duplicates=keep_first"
        )


def check_labels(manifest: pd.DataFrame, kind: TaskKind) -> None:
    if manifest.empty:
        raise StagewiseError(
            "ingest: no image could be decoded; check data.root and the files in it"
        )
    kind.check(manifest["label"])
