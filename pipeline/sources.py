"""Data sources -> the list of candidate images and their labels (fastai's DataBlock
"get items" + "get label"), before anything is decoded.

Sources: `digits` (scikit-learn's bundled arrays), `folder` (image files under data.root,
optionally in train/ valid/ test/ top folders) and `table` (a CSV or parquet file with
path,label[,group][,time] columns). Labels: `parent` (the folder a file is in), `regex` (on
the file name: the first group, or True/False whether it matches when the pattern has no
group), or `column` (the table's label column).
"""

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import DataConfig, Label, Source
from pipeline.errors import StagewiseError

SPLIT_FOLDERS = ("train", "valid", "test")


@dataclass(frozen=True)
class Item:
    """One candidate image, before decoding."""

    id: str
    label: str
    path: Path | None = None
    pixels: np.ndarray | None = None  # sources that ship arrays instead of files
    group: str | None = None
    time: str | None = None
    folder_split: str | None = None  # train/valid/test when the folder layout says so


@dataclass(frozen=True)
class Listing:
    items: list[Item]
    rejected: list[dict]  # {"id", "reason"}: files that could not be labelled


def list_items(cfg: DataConfig) -> Listing:
    """All candidate images of the configured source, sorted by id."""
    if cfg.source == Source.digits:
        listing = Listing(digits_items(), [])
    elif cfg.source == Source.folder:
        listing = folder_items(cfg)
    else:
        listing = table_items(cfg)
    items = sorted(listing.items, key=lambda item: item.id)
    if len({item.id for item in items}) != len(items):
        raise StagewiseError(
            f"data: {cfg.source} lists some image twice; each path must appear once"
        )
    return Listing(items, listing.rejected)


def digits_items() -> list[Item]:
    from sklearn.datasets import load_digits  # ~1 s to import: only for this source

    digits = load_digits()
    # Pixel values are 0..16; stretch them to the full 0..255 range of a uint8 image.
    pixels = np.rint(digits.images * (255 / 16)).astype(np.uint8)
    return [
        Item(id=f"digits/{i:04d}", label=str(target), pixels=image)
        for i, (image, target) in enumerate(zip(pixels, digits.target, strict=True))
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
    """A function (relative path, table label or None) -> label, raising ValueError if none."""
    if cfg.label == Label.regex:
        if not cfg.label_regex:
            raise StagewiseError(
                "data.label=regex needs data.label_regex, e.g. '^(.+)_\\d+\\.jpg$'"
            )
        try:
            pattern = re.compile(cfg.label_regex)
        except re.error as e:
            raise StagewiseError(
                f"data.label_regex={cfg.label_regex!r} is not a valid regex: {e}"
            ) from None

        def by_regex(path: Path, _: str | None) -> str:
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
        return lambda path, column: column

    def by_parent(path: Path, _: str | None) -> str:
        if len(path.parts) < 2:
            raise ValueError(
                "not in a class folder (data.label=parent labels by the parent folder)"
            )
        return path.parent.name

    return by_parent


def folder_items(cfg: DataConfig) -> Listing:
    root = existing_root(cfg)
    label_of = labeller(cfg)
    suffixes = {ext.lower() for ext in cfg.extensions}
    items, rejected = [], []
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file()):
        relative = path.relative_to(root)
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
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise StagewiseError(f"data.table={path}: no such file") from None
    except (ValueError, OSError) as e:
        raise StagewiseError(f"data.table={path}: cannot read it as a table ({e})") from None


def table_items(cfg: DataConfig) -> Listing:
    """Rows of path,label[,group][,time]; relative paths resolve against data.root
    (default: the table's own folder)."""
    if not cfg.table:
        raise StagewiseError(
            "data.table is not set: give the CSV or parquet file listing the images"
        )
    table_path = Path(cfg.table).expanduser()
    table = read_table(table_path)
    needed = {"path"} | ({"label"} if cfg.label == Label.column else set())
    if missing := needed - set(table.columns):
        raise StagewiseError(
            f"data.table={cfg.table}: missing column(s) {', '.join(sorted(missing))}; "
            "expected path,label[,group][,time]"
        )
    times = parse_times(table, cfg.table) if "time" in table.columns else [None] * len(table)
    root = Path(cfg.root).expanduser() if cfg.root else table_path.parent
    label_of = labeller(cfg)
    items, rejected = [], []
    for row, time in zip(table.to_dict("records"), times, strict=True):
        relative = Path(str(row["path"]))
        try:
            label = label_of(relative, str(row.get("label", "")))
        except ValueError as e:
            rejected.append({"id": relative.as_posix(), "reason": str(e)})
            continue
        group = row.get("group")
        items.append(
            Item(
                id=relative.as_posix(),
                label=label,
                path=relative if relative.is_absolute() else root / relative,
                group=None if group in (None, "") else str(group),
                time=time,
            )
        )
    return Listing(items, rejected)


def parse_times(table: pd.DataFrame, name: str) -> list[str]:
    """The time column as sortable ISO-8601 strings (UTC)."""
    try:
        parsed = pd.to_datetime(table["time"], utc=True, format="mixed")
    except (ValueError, TypeError) as e:
        raise StagewiseError(
            f"data.table={name}: the time column has a value that is not a date/time ({e})"
        ) from None
    return [value.isoformat() for value in parsed]
