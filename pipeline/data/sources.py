"""Data sources -> the list of candidate images and their labels (fastai's DataBlock
"get items" + "get label"), before anything is decoded.

Sources: `digits` (the embedded 8x8 digits, a CSV file of pixel rows), `folder` (image files
under data.root, optionally in train/ valid/ test/ top folders) and `table` (a CSV or parquet
file with path,label[,group][,time] columns, the images under data.root). Every source is
files: data.root and data.table are ingest's DVC dependencies, hashed by DVC. Labels:
`parent` (the folder a file is in), `regex` (on the file name: the first group, or True/False
whether it matches when the pattern has no group), or `column` (the table's label column).

Bad input is listed in the ingest report, not fatal and not silently used: table rows with
no label or with a path outside data.root are refused with their row number, and a file name
that is not UTF-8 is kept with its odd bytes written as \\xNN.
"""

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.config import DataConfig, Label, Source
from pipeline.core.errors import StagewiseError
from pipeline.core.paths import EMBEDDED_DIGITS
from pipeline.tasks.kinds import MISSING_LABELS, SINGLE_LABEL, SingleLabel, TaskKind, compiled

SPLIT_FOLDERS = ("train", "valid", "test")


@dataclass(frozen=True)
class Item:
    """One candidate image, before decoding."""

    id: str
    label: str | list  # a class name; a list of labels or of target values (pipeline.tasks.kinds)
    path: Path | None = None
    pixels: np.ndarray | None = None  # sources that ship arrays instead of files
    group: str | None = None
    time: str | None = None
    folder_split: str | None = None  # train/valid/test when the folder layout says so
    row: int | None = None  # the table's row number (from 1, header not counted)


@dataclass(frozen=True)
class Listing:
    items: list[Item]
    rejected: list[dict]  # {"id", "reason"[, "row"]}: files or table rows that were refused


def list_items(cfg: DataConfig, kind: TaskKind = SINGLE_LABEL) -> Listing:
    """All candidate images of the configured source, labelled for the task, sorted by id."""
    if cfg.source == Source.digits:
        listing = Listing(digits_items(Path(cfg.table), kind), [])
    elif cfg.source == Source.folder:
        listing = folder_items(cfg, kind)
    else:
        listing = table_items(cfg, kind)
    items = sorted(listing.items, key=lambda item: item.id)
    if repeat := first_repeat([item.id for item in items]):
        raise StagewiseError(
            f"data: {cfg.source} lists {items[repeat[0]].id} twice; each image must appear once"
        )
    return Listing(items, listing.rejected)


def first_repeat(values: list[str]) -> tuple[int, int] | None:
    """(position of the first value seen before, position where it was first seen), or None."""
    seen: dict[str, int] = {}
    for position, value in enumerate(values):
        if (first := seen.setdefault(value, position)) != position:
            return position, first
    return None


def path_text(path: os.PathLike | str) -> str:
    """path as text that every UTF-8 writer takes (parquet, JSON, hashes of ids). Linux file
    names are bytes; one that is not UTF-8 (b'caf\\xe9.png', from a Latin-1 machine) would
    carry lone surrogates that the parquet writer refuses, so its odd bytes are written as
    \\xNN escapes instead ('caf\\\\xe9.png'): readable, and the bytes stay recoverable."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def digits_items(table: Path = EMBEDDED_DIGITS, kind: TaskKind = SINGLE_LABEL) -> list[Item]:
    """The digits of a CSV of rows of 64 pixel values (0..16) and the digit, the format of
    scikit-learn's digits.csv.gz, of which the project embeds a copy."""
    if not isinstance(kind, SingleLabel):
        raise StagewiseError(
            f"data=digits has one class per image: task={kind.task} needs data=table or "
            "data=folder (python -m pipeline.data.examples writes example tables)"
        )
    try:
        rows = np.loadtxt(table, delimiter=",", ndmin=2)
    except (OSError, ValueError) as e:
        raise StagewiseError(f"data.table={table}: cannot read the digits from it ({e})") from None
    if rows.shape[1] != 65:
        raise StagewiseError(
            f"data.table={table}: {rows.shape[1]} columns; digits rows are 64 pixels and the digit"
        )
    # Pixel values are 0..16; stretch them to the full 0..255 range of a uint8 image.
    pixels = np.rint(rows[:, :-1].reshape(-1, 8, 8) * (255 / 16)).astype(np.uint8)
    targets = rows[:, -1].astype(int)
    return [
        Item(id=f"digits/{i:04d}", label=str(target), pixels=image)
        for i, (image, target) in enumerate(zip(pixels, targets, strict=True))
    ]


def existing_root(cfg: DataConfig) -> Path:
    if not cfg.root:
        raise StagewiseError(
            f"data.root is not set: the {cfg.source} source needs the folder of its images"
        )
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise StagewiseError(
            f"data.root={cfg.root}: no such folder; point it at a folder of class subfolders"
        )
    return root


def labeller(cfg: DataConfig):
    """A function (relative path, table row or None) -> class name, raising ValueError if none."""
    if cfg.label == Label.regex:
        pattern = compiled(cfg.label_regex)

        def by_regex(path: Path, _: dict | None) -> str:
            match = pattern.search(path.name)
            if pattern.groups == 0:
                return str(match is not None)  # a boolean label, like fastai's is_cat
            if match is None:
                raise ValueError(
                    f"data.label_regex {cfg.label_regex!r} does not match the file name"
                )
            return match.group(1)

        return by_regex
    if cfg.label == Label.column:
        if cfg.source != Source.table:
            raise StagewiseError("data.label=column needs data.source=table")
        return column_label

    def by_parent(path: Path, _: dict | None) -> str:
        if len(path.parts) < 2:
            raise ValueError(
                "not in a class folder (data.label=parent labels by the parent folder)"
            )
        return path.parent.name

    return by_parent


def column_label(_: Path, row: dict | None) -> str:
    """The table's label cell; an empty or missing one leaves the row unlabelled."""
    value = row.get("label")
    if value is None or pd.isna(value) or str(value).strip() in MISSING_LABELS:
        raise ValueError("no label: the label column is empty")
    return str(value)


def folder_items(cfg: DataConfig, kind: TaskKind) -> Listing:
    root = existing_root(cfg)
    label_of = kind.labeller(cfg, lambda: labeller(cfg))
    suffixes = {ext.lower() for ext in cfg.extensions}
    items, rejected = [], []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file()):
        relative = Path(path_text(path.relative_to(root)))  # path keeps the real bytes
        item_id = relative.as_posix()
        folder_split = None
        if cfg.split_folders:
            folder_split, relative = relative.parts[0], Path(*relative.parts[1:])
            if folder_split not in SPLIT_FOLDERS or len(relative.parts) == 0:
                rejected.append(
                    {"id": item_id, "reason": "not under a train/, valid/ or test/ folder"}
                )
                continue
        try:
            label = label_of(relative, None)
        except ValueError as e:
            rejected.append({"id": item_id, "reason": str(e)})
            continue
        items.append(Item(id=item_id, label=label, path=path, folder_split=folder_split))
    if not items and not rejected:
        raise StagewiseError(
            f"data.root={cfg.root}: no images found; expected <root>/<label>/<image> with an "
            f"extension in data.extensions ({', '.join(sorted(suffixes))})"
        )
    return Listing(items, rejected)


def read_table(path: Path) -> pd.DataFrame:
    try:
        if path.suffix.lower() == ".parquet":
            # nullable dtypes: an integer label column with a gap stays 3, not 3.0
            return pd.read_parquet(path, dtype_backend="numpy_nullable")
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise StagewiseError(f"data.table={path}: no such file") from None
    except (ValueError, OSError) as e:
        raise StagewiseError(f"data.table={path}: cannot read it as a table ({e})") from None


def table_items(cfg: DataConfig, kind: TaskKind) -> Listing:
    """Rows of path,label[,group][,time]; relative paths resolve against data.root and must
    stay inside it, symlinks resolved, unless data.allow_outside_root (DVC hashes data.root,
    not what lies outside it). Rows are numbered from 1, the header not counted."""
    if not cfg.table:
        raise StagewiseError(
            "data.table is not set: give the CSV or parquet file listing the images"
        )
    root = existing_root(cfg)
    table_path = Path(cfg.table).expanduser()
    table = read_table(table_path)
    label_of = kind.labeller(cfg, lambda: labeller(cfg))
    needed = {"path"} | kind.table_columns(cfg)
    if missing := needed - set(table.columns):
        raise StagewiseError(
            f"data.table={cfg.table}: missing column(s) {', '.join(sorted(missing))}; "
            f"expected {','.join(['path', *sorted(needed - {'path'})])}[,group][,time]"
        )
    ids = [Path(str(path)).as_posix() for path in table["path"]]
    if repeat := first_repeat(ids):
        row, first = repeat[0] + 1, repeat[1] + 1
        raise StagewiseError(
            f"data.table={cfg.table}: row {row} ({ids[repeat[0]]}) repeats row {first}; "
            "list each image once"
        )
    times = time_texts(table) if "time" in table.columns else [None] * len(table)
    real_root = root.resolve()
    outside = f"outside data.root {root}; set data.allow_outside_root=true to read it"
    items, rejected = [], []
    rows = zip(ids, table.to_dict("records"), times, strict=True)
    for number, (item_id, row, time) in enumerate(rows, start=1):
        path = root / item_id  # an absolute item_id stays itself
        try:
            if not (cfg.allow_outside_root or is_inside(path, real_root)):
                raise ValueError(outside)
            label = label_of(Path(item_id), row)
        except ValueError as e:
            rejected.append({"id": item_id, "row": number, "reason": str(e)})
            continue
        group = row.get("group")
        items.append(
            Item(
                id=item_id,
                label=label,
                path=path,
                group=None if group is None or pd.isna(group) or group == "" else str(group),
                time=time,
                row=number,
            )
        )
    return Listing(items, rejected)


def time_texts(table: pd.DataFrame) -> list[str | None]:
    """The time column as text, as written: the split stage reads it (split.time_unit), so a
    change of unit reruns the split, not the decoding."""
    return [None if pd.isna(value) or value == "" else str(value) for value in table["time"]]


def is_inside(path: Path, real_root: Path) -> bool:
    """Whether path is real_root (resolved) or below it once symlinks and ../ are resolved:
    a table row cannot reach /etc/passwd through ../../ or a symlink out of the dataset."""
    return path.resolve().is_relative_to(real_root)
