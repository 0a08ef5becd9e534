"""ingest: candidate images -> manifest rows + a uint8 image array store; loading them back.

Images are decoded and resized once, here, in parallel across the machine's cores; later
stages read the array store (data/ingested/images.npy, N x H x W x C uint8) through a memory
map, so no stage holds the whole dataset in RAM. The manifest has one row per stored image.

Incremental: given the previous manifest, images whose bytes (sha256) it lists are copied from
the previous store instead of decoded again, when both were made with the same decoding key
(settings, decoding code, library versions). Only new and changed files are decoded, and the
outputs are byte for byte those of a full ingest.
"""

import hashlib
import logging
import multiprocessing
import multiprocessing.pool
import os
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import PIL
import pyarrow as pa
from PIL import features

from pipeline.core.config import DataConfig
from pipeline.core.errors import StagewiseError
from pipeline.core.progress import progress
from pipeline.data import decode
from pipeline.data.decode import (
    BadImage,
    Decoded,
    DecodeSettings,
    convert_pixels,
    decode_bytes,
)
from pipeline.data.sources import Item, list_items, path_text
from pipeline.data.store import (
    StoreWriter,
    images_sha256,
    load_images,
    manifest_metadata,
)
from pipeline.tasks.kinds import SINGLE_LABEL, TaskKind

MANIFEST_COLUMNS = [
    "id", "path", "index", "label", "group", "time", "folder_split", "sha256", "height", "width", "mode",
]  # fmt: skip
# Below this many files a process pool costs more than it saves.
PARALLEL_MIN_ITEMS = 64
# Pillow's image codecs: another build of one may decode the same bytes to other pixels.
CODECS = ("jpg", "jpg_2000", "zlib", "libtiff", "webp")

Outcome = tuple[Decoded, str] | str  # (decoded image, sha256 of its bytes), or why it is unusable
EXAMPLES = 3  # unusable rows an error names

log = logging.getLogger("stagewise")


@dataclass(frozen=True)
class Ingested:
    manifest: pd.DataFrame
    report: dict
    metadata: dict[str, str]  # for the manifest file (store.write_manifest): what made the store


@dataclass(frozen=True)
class Previous:
    """An earlier ingest's outputs, made with today's decoding key: its images by sha256."""

    images: np.ndarray  # memory map of the earlier store
    rows: dict[str, tuple[int, int, int, str]]  # sha256 -> (index, height, width, mode)

    def reuse(self, item: Item) -> tuple[Decoded, str] | None:
        """The earlier decoding of item's bytes, or None when it must be decoded."""
        sha256 = item_sha256(item)
        if sha256 not in self.rows:
            return None
        index, height, width, mode = self.rows[sha256]
        return Decoded(self.images[index], height, width, mode), sha256


def check_data_config(cfg: DataConfig) -> None:
    if cfg.channels not in (1, 3):
        raise StagewiseError(f"data.channels={cfg.channels}: use 1 (greyscale) or 3 (RGB)")
    if cfg.image_size < 1:
        raise StagewiseError(
            f"data.image_size={cfg.image_size}: must be a positive number of pixels"
        )
    if len(cfg.background) != 3 or not all(0 <= v <= 255 for v in cfg.background):
        raise StagewiseError(f"data.background={cfg.background}: give [r, g, b] with values 0..255")


def decode_settings(cfg: DataConfig) -> DecodeSettings:
    return DecodeSettings(
        cfg.image_size, cfg.channels, cfg.resize, tuple(cfg.background), cfg.max_pixels
    )


def decoding_key(settings: DecodeSettings) -> str:
    """What an image's array depends on besides its bytes: the settings, the decoding code (all
    of decode.py and of this module, so no helper is forgotten) and the libraries that run it.
    Equal keys: equal bytes give equal arrays, so an earlier array can be reused."""
    parts = [
        repr(settings),
        *(Path(code).read_text() for code in (decode.__file__, __file__)),
        f"Pillow {PIL.__version__}, numpy {np.__version__}",
        *(f"{codec} {features.version(codec)}" for codec in CODECS),
    ]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def item_bytes(item: Item) -> bytes:
    """What an item's sha256 is of: its file's bytes, or its pixels' for array sources."""
    return item.pixels.tobytes() if item.pixels is not None else item.path.read_bytes()


def item_sha256(item: Item) -> str | None:
    """sha256 of an item's bytes, as decode_item computes it; None if the file is unreadable."""
    try:
        return hashlib.sha256(item_bytes(item)).hexdigest()
    except OSError:
        return None


def decode_item(item: Item, settings: DecodeSettings) -> Outcome:
    """(decoded image, sha256 of its bytes), or the reason it is unusable. Runs in a worker."""
    try:
        raw = item_bytes(item)
        if item.pixels is not None:
            height, width = item.pixels.shape[:2]
            array = convert_pixels(item.pixels, settings)
            decoded = Decoded(array, height, width, mode="L" if item.pixels.ndim == 2 else "RGB")
        else:
            decoded = decode_bytes(raw, settings)
    except BadImage as e:
        return str(e)
    except OSError as e:
        return f"unreadable: {e.strerror or e}"
    return decoded, hashlib.sha256(raw).hexdigest()


def workers() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def decode_all(items: list[Item], settings: DecodeSettings) -> Iterator[Outcome]:
    """decode_item over items, in order; across worker processes when it pays off."""
    task = partial(decode_item, settings=settings)
    n_workers = workers()
    if n_workers < 2 or len(items) < PARALLEL_MIN_ITEMS or items[0].pixels is not None:
        yield from map(task, items)
        return
    with worker_pool(n_workers) as pool:
        yield from pool.imap(task, items, chunksize=16)


def worker_pool(n_workers: int) -> multiprocessing.pool.Pool:
    """Decode workers from a fork server, not a fork of this process, which copies the locks
    its threads hold and the SIGTERM handlers others installed (seen in a test process that had
    run torch's launcher: a forked worker outlived the pool's terminate and hung the caller).

    The server imports this module and the program's main one once, and forks the workers from
    that state: multiprocessing re-imports the main module in every worker, and by default
    does not preload one run with python -m, so each worker imported pandas, Pillow and Hydra
    itself (on 2 busy cores, a pool decoding 200 images took 2.4 s; preloaded, 0.9 s).
    """
    context = multiprocessing.get_context("forkserver")
    main = getattr(sys.modules["__main__"].__spec__, "name", None)  # set by python -m
    # as multiprocessing does, a package's __main__ is not run again
    mains = [main] if main and not main.endswith("__main__") else []
    context.set_forkserver_preload(["__main__", __name__, *mains])
    return context.Pool(n_workers)


def ingest(
    cfg: DataConfig,
    images_path: Path,
    kind: TaskKind = SINGLE_LABEL,
    previous_manifest: Path | None = None,
) -> Ingested:
    """Decode every item into images_path (a .npy array store) and return the manifest.

    previous_manifest: the manifest an earlier ingest wrote for the store now at images_path;
    the images it lists are copied from that store, not decoded again (when it is usable).
    """
    check_data_config(cfg)
    listing = list_items(cfg, kind)
    items = listing.items
    settings = decode_settings(cfg)
    key = decoding_key(settings)
    shape = (cfg.image_size, cfg.image_size, cfg.channels)
    previous = previous_manifest and open_previous(previous_manifest, images_path, shape, key)
    reused = [previous.reuse(item) if previous else None for item in items]
    with StoreWriter(images_path, shape) as store:
        outcomes = reuse_or_decode(items, reused, settings)
        rows, bad, duplicates = decode_into(store, items, outcomes, cfg.duplicates)
        manifest = pd.DataFrame(rows, columns=MANIFEST_COLUMNS)
        check_usable(manifest, listing.rejected, bad, kind)
        bad = listing.rejected + bad
        check_bad_share(len(bad), len(items) + len(listing.rejected), cfg.max_bad_fraction)
        check_duplicates(duplicates, cfg.duplicates)
        check_labels(manifest, kind)
        store.finish()
    n_reused = len(items) - reused.count(None)
    report = ingest_report(cfg, manifest, bad, duplicates, kind)
    report |= {"decoded": len(items) - n_reused, "reused": n_reused}
    return Ingested(manifest, report, {"decoding_key": key, "images_sha256": store.sha256()})


def open_previous(
    manifest_path: Path, images_path: Path, shape: tuple[int, ...], key: str
) -> Previous | None:
    """The earlier outputs, if they can be reused: both readable, made with this decoding key,
    and the store the manifest was written for (its sha256). Anything else: None, a full
    ingest (a missing or foreign file, an older manifest, a crash between the two writes)."""
    try:
        metadata = manifest_metadata(manifest_path)
        if metadata.get("decoding_key") != key:
            return None
        columns = ["sha256", "index", "height", "width", "mode"]
        manifest = pd.read_parquet(manifest_path, columns=columns)
        images = load_images(images_path)
        if images.shape != (len(manifest), *shape) or images.dtype != np.uint8:
            return None
        if images_sha256(images) != metadata.get("images_sha256"):
            return None
    except (OSError, ValueError, KeyError, pa.ArrowException, StagewiseError):
        return None
    rows = manifest.set_index("sha256")[columns[1:]].itertuples(name=None)
    return Previous(images, {sha256: tuple(row) for sha256, *row in rows})


def reuse_or_decode(
    items: list[Item], reused: list[tuple[Decoded, str] | None], settings: DecodeSettings
) -> Iterator[Outcome]:
    """Each item's outcome, in order: the reused one where there is one, else decoded (the
    items to decode go to decode_all together, so they share its process pool)."""
    todo = [item for item, outcome in zip(items, reused, strict=True) if outcome is None]
    with closing(decode_all(todo, settings)) as decoded:
        for outcome in reused:
            yield next(decoded) if outcome is None else outcome


def decode_into(
    store: StoreWriter, items: list[Item], outcomes: Iterator[Outcome], duplicate_policy: str
) -> tuple[list[tuple], list[dict], dict[str, list[str]]]:
    """Outcomes into the store: (manifest rows, unusable files, {first id: its copies})."""
    rows, bad, first_of = [], [], {}
    duplicates: dict[str, list[str]] = {}
    outcomes = progress(outcomes, desc="ingest", total=len(items))
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
    labels = manifest["label"]
    constant = kind.constant(labels, kind.names(labels))
    return {
        "source": cfg.source,
        "images": len(manifest),
        "image_shape": [cfg.image_size, cfg.image_size, cfg.channels],
        kind.counts_key: kind.counts(labels),
        **({"constant_labels": constant} if constant else {}),
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


def check_usable(
    manifest: pd.DataFrame, refused: list[dict], undecodable: list[dict], kind: TaskKind
) -> None:
    """Refuse an ingest that kept no image, saying why: the images' labels or targets (every
    row of a regression table whose target column holds text, say), or their files."""
    if not manifest.empty:
        return
    examples = "; ".join(map(unusable_entry, (refused + undecodable)[:EXAMPLES]))
    examples = f", e.g. {examples}" if examples else ""
    if not refused:
        raise StagewiseError(
            f"ingest: no image could be decoded{examples}; check data.root and the files in it"
        )
    decoded = f" and {len(undecodable)} could not be decoded" if undecodable else ""
    raise StagewiseError(
        f"ingest: no usable image: {len(refused)} were refused for their {kind.label_word} (or "
        f"their path){decoded}{examples}; fix them in the data, or the data.* settings that "
        "read them"
    )


def unusable_entry(entry: dict) -> str:
    """A report's bad_files entry as an error's example: where it is and why it is unusable."""
    where = f"row {entry['row']} ({entry['id']})" if "row" in entry else entry["id"]
    return f"{where}: {entry['reason']}"


def check_labels(manifest: pd.DataFrame, kind: TaskKind) -> None:
    labels = manifest["label"]
    kind.check(labels)
    if constant := kind.constant(labels, kind.names(labels)):
        log.warning(kind.constant_warning(constant, "ingest", "the images"))
