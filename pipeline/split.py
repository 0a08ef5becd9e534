"""Split strategies: which images train, which validate, which are held out for the test.

The split is stratified and seeded: every class keeps its share in every split, and the same
ids + seed always give the same assignment, whatever order the rows arrive in.
"""

import hashlib
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import SplitConfig, Strategy
from pipeline.errors import StagewiseError
from pipeline.paths import Paths
from pipeline.store import class_names, load_images, load_manifest

SPLITS = ("train", "valid", "test")

log = logging.getLogger("stagewise")


def split_sizes(n: int, valid_pct: float, test_pct: float) -> tuple[int, int, int]:
    """(train, valid, test) counts for a class of n images; a non-zero share gets >= 1 image."""

    def share(pct: float) -> int:
        return max(1, math.floor(n * pct + 0.5)) if pct > 0 else 0

    n_valid, n_test = share(valid_pct), share(test_pct)
    return n - n_valid - n_test, n_valid, n_test


def check_split_config(cfg: SplitConfig) -> None:
    """The shares' ranges; the schema (pipeline.config) already refused an unknown strategy."""
    if cfg.strategy in (Strategy.folder, Strategy.list):
        return  # the shares come from the folders or the list
    for key, pct in (("valid_pct", cfg.valid_pct), ("test_pct", cfg.test_pct)):
        if not 0 <= pct < 1:
            raise StagewiseError(f"split.{key}={pct}: must be a fraction in [0, 1)")
    if cfg.valid_pct <= 0:
        raise StagewiseError("split.valid_pct must be > 0: training needs a validation set")
    if cfg.valid_pct + cfg.test_pct >= 1:
        raise StagewiseError(
            f"split.valid_pct + split.test_pct = {cfg.valid_pct + cfg.test_pct}: must leave images to train on"
        )


def check_class_sizes(labels: pd.Series, valid_pct: float, test_pct: float) -> None:
    """Every class needs at least one image in each split it is stratified into."""
    too_small = []
    for label, n in labels.value_counts().sort_index().items():
        if split_sizes(int(n), valid_pct, test_pct)[0] < 1:
            too_small.append(f"{label!r} ({n})")
    if too_small:
        needed = 1 + (valid_pct > 0) + (test_pct > 0)
        raise StagewiseError(
            f"split: class(es) {', '.join(too_small)} have too few images for train/valid/test; "
            f"each needs at least {needed}: add images, remove the class, or lower split.valid_pct/test_pct"
        )


def assign_splits(manifest: pd.DataFrame, cfg: SplitConfig) -> pd.DataFrame:
    """The configured strategy's split: a frame with columns id, split, sorted by id."""
    check_split_config(cfg)
    strategies = {
        "random": random_split,
        "group": group_split,
        "time": time_split,
        "folder": folder_split,
        "list": list_split,
    }
    split = strategies[cfg.strategy](manifest, cfg).sort_values("id", ignore_index=True)
    check_classes_train(manifest, split)
    return split


def random_split(manifest: pd.DataFrame, cfg: SplitConfig) -> pd.DataFrame:
    """Seeded stratified split: each class keeps its share in each split."""
    check_class_sizes(manifest["label"], cfg.valid_pct, cfg.test_pct)
    rng = np.random.default_rng(cfg.seed)
    rows = manifest.sort_values("id")
    assigned = []
    for _, group in rows.groupby("label", sort=True):
        n_train, n_valid, n_test = split_sizes(len(group), cfg.valid_pct, cfg.test_pct)
        names = np.repeat(SPLITS, [n_train, n_valid, n_test])
        assigned.append(
            pd.DataFrame({"id": group["id"].to_numpy(), "split": rng.permutation(names)})
        )
    return pd.concat(assigned)


def group_labels(manifest: pd.DataFrame, regex: str | None) -> pd.Series:
    """Each image's group: group_regex's first group on its id, else the manifest's group column."""
    if regex is None:
        groups = manifest["group"]
        if groups.isna().any():
            raise StagewiseError(
                f"split: {int(groups.isna().sum())} image(s) have no group; use data=table with a group "
                "column, or set split.group_regex to read the group from the image path"
            )
        return groups.astype(str)
    try:
        pattern = re.compile(regex)
    except re.error as e:
        raise StagewiseError(f"split.group_regex={regex!r} is not a valid regex: {e}") from None
    if pattern.groups < 1:
        raise StagewiseError(f"split.group_regex={regex!r} needs a capture group, e.g. '^(p\\d+)_'")
    groups = manifest["id"].str.extract(pattern, expand=False)
    if groups.isna().any():
        example = manifest.loc[groups.isna(), "id"].iloc[0]
        raise StagewiseError(f"split.group_regex={regex!r} does not match image {example!r}")
    return groups


def group_split(manifest: pd.DataFrame, cfg: SplitConfig) -> pd.DataFrame:
    """Whole groups, in seeded random order, fill test, then valid, then train."""
    groups = group_labels(manifest, cfg.group_regex)
    sizes = groups.value_counts().sort_index()
    if len(sizes) < 2 + (cfg.test_pct > 0):
        raise StagewiseError(
            f"split=group: only {len(sizes)} group(s); need one per split at least"
        )
    order = np.random.default_rng(cfg.seed).permutation(sizes.index.to_numpy())
    targets = {"test": cfg.test_pct * len(manifest), "valid": cfg.valid_pct * len(manifest)}
    split_of, filled = {}, dict.fromkeys(targets, 0)
    for group in order:
        size = int(sizes[group])
        # A group joins test, then valid, while that split is short of its share by half the group.
        name = next((n for n in ("test", "valid") if filled[n] + size / 2 <= targets[n]), "train")
        split_of[group] = name
        filled[name] = filled.get(name, 0) + size
    return pd.DataFrame({"id": manifest["id"].to_numpy(), "split": groups.map(split_of).to_numpy()})


def time_split(manifest: pd.DataFrame, cfg: SplitConfig) -> pd.DataFrame:
    """Oldest images train; the next valid_pct validate; the latest test_pct are the test set."""
    if manifest["time"].isna().any():
        raise StagewiseError(
            "split=time needs a time for every image: use data=table with a time column"
        )
    rows = manifest.sort_values(["time", "id"])
    n = len(rows)
    n_test = math.floor(n * cfg.test_pct + 0.5)
    n_valid = math.floor(n * cfg.valid_pct + 0.5)
    names = np.repeat(SPLITS, [n - n_valid - n_test, n_valid, n_test])
    return pd.DataFrame({"id": rows["id"].to_numpy(), "split": names})


def folder_split(manifest: pd.DataFrame, cfg: SplitConfig) -> pd.DataFrame:
    if manifest["folder_split"].isna().any():
        raise StagewiseError(
            "split=folder needs data.split_folders=true and <root>/train|valid|test/ folders"
        )
    return pd.DataFrame({"id": manifest["id"], "split": manifest["folder_split"]})


def list_split(manifest: pd.DataFrame, cfg: SplitConfig) -> pd.DataFrame:
    """id,split rows from split.list_file; every image must be listed exactly once."""
    if not cfg.list_file:
        raise StagewiseError("split=list needs split.list_file: a CSV with columns id,split")
    try:
        listed = pd.read_csv(cfg.list_file, dtype=str)
    except (OSError, ValueError) as e:
        raise StagewiseError(f"split.list_file={cfg.list_file}: cannot read it ({e})") from None
    if not {"id", "split"} <= set(listed.columns):
        raise StagewiseError(f"split.list_file={cfg.list_file}: needs columns id,split")
    if unknown := sorted(set(listed["split"]) - set(SPLITS)):
        raise StagewiseError(
            f"split.list_file={cfg.list_file}: unknown split name(s) {unknown}; use train, valid, test"
        )
    merged = manifest[["id"]].merge(
        listed[["id", "split"]], on="id", how="left", validate="one_to_one"
    )
    if merged["split"].isna().any():
        missing = merged.loc[merged["split"].isna(), "id"]
        raise StagewiseError(
            f"split.list_file={cfg.list_file}: {len(missing)} image(s) are not listed, e.g. {missing.iloc[0]!r}"
        )
    return merged


def check_classes_train(manifest: pd.DataFrame, split: pd.DataFrame) -> None:
    """Every class must have training images; a class missing from valid or test is reported."""
    joined = manifest[["id", "label"]].merge(split, on="id")
    present = joined.groupby("split")["label"].unique()
    classes = set(manifest["label"])
    untrained = sorted(classes - set(present.get("train", [])))
    if untrained:
        raise StagewiseError(
            f"split: class(es) {untrained} have no training images under split.strategy; "
            "add images or choose another split"
        )
    for name in ("valid", "test"):
        if name in present and (absent := sorted(classes - set(present[name]))):
            log.warning("split: class(es) %s have no %s images", absent, name)


def leakage(manifest: pd.DataFrame, split: pd.DataFrame, cfg: SplitConfig) -> dict:
    """What crosses split boundaries: groups (when groups are known) and identical images."""
    joined = manifest.merge(split, on="id", validate="one_to_one")
    checks: dict = {"groups_checked": False, "group_overlap": []}
    if cfg.strategy == "group" or joined["group"].notna().all():
        groups = group_labels(joined, cfg.group_regex if cfg.strategy == "group" else None)
        spread = joined.assign(group=groups.to_numpy()).groupby("group")["split"].unique()
        checks["groups_checked"] = True
        checks["group_overlap"] = [
            {"group": str(g), "splits": sorted(s)} for g, s in spread.items() if len(s) > 1
        ]
    by_hash = joined.groupby("sha256")
    checks["duplicate_images"] = [
        {"sha256": sha, "ids": sorted(rows["id"]), "splits": sorted(rows["split"].unique())}
        for sha, rows in by_hash
        if rows["split"].nunique() > 1
    ]
    return checks


def enforce_leakage(checks: dict, policy: str) -> None:
    problems = []
    if checks["group_overlap"]:
        first = checks["group_overlap"][0]
        problems.append(
            f"{len(checks['group_overlap'])} group(s) in several splits (e.g. {first['group']!r} in {first['splits']})"
        )
    if checks["duplicate_images"]:
        first = checks["duplicate_images"][0]
        problems.append(
            f"{len(checks['duplicate_images'])} identical image(s) in several splits (e.g. {first['ids']})"
        )
    if not problems:
        return
    message = f"split leaks: {'; '.join(problems)}; use split=group, remove the copies, or set split.leakage=warn"
    if policy == "fail":
        raise StagewiseError(message)
    log.warning("warning: %s", message)


def ids_digest(ids: pd.Series) -> str:
    """sha256 of the sorted ids: equal digests mean exactly the same images."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def split_report(manifest: pd.DataFrame, split: pd.DataFrame, cfg: SplitConfig) -> dict:
    """Counts per split and class, a digest of each split's ids, and the leakage checks."""
    joined = manifest[["id", "label"]].merge(split, on="id", validate="one_to_one")
    counts = joined.groupby(["split", "label"]).size()
    return {
        "strategy": cfg.strategy,
        "seed": cfg.seed,
        "splits": {
            name: {
                "images": int((joined["split"] == name).sum()),
                "classes": {str(k): int(v) for k, v in counts.get(name, pd.Series()).items()},
                "digest": ids_digest(joined.loc[joined["split"] == name, "id"]),
            }
            for name in SPLITS
        },
        "leakage": leakage(manifest, split, cfg),
    }


def split_indices(manifest: pd.DataFrame, split: pd.DataFrame, name: str) -> np.ndarray:
    """Array-store indices of the images in one split, in id order."""
    if name not in SPLITS:
        raise ValueError(f"unknown split {name!r}")
    ids = split.loc[split["split"] == name, "id"]
    rows = manifest[manifest["id"].isin(ids)].sort_values("id")
    return rows["index"].to_numpy()


def load_split_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise StagewiseError(f"{path} is missing: run `dvc repro split` first")
    return pd.read_parquet(path)


@dataclass(frozen=True)
class SplitImages:
    ids: np.ndarray
    images: np.ndarray  # N x H x W x C uint8, in memory
    targets: np.ndarray  # class indices into `classes`
    classes: list[str]


def load_split_images(paths: Paths, name: str) -> SplitImages:
    """The images and class indices of one split (train, valid or test), in id order.

    Only test-holdout may ask for "test": the holdout is used once, at the end.
    """
    manifest = load_manifest(paths.manifest)
    split = load_split_table(paths.split)
    classes = class_names(manifest)
    rows = manifest.set_index("index").loc[split_indices(manifest, split, name)]
    lookup = {label: i for i, label in enumerate(classes)}
    images = np.asarray(load_images(paths.images)[rows.index.to_numpy()])
    return SplitImages(
        ids=rows["id"].to_numpy(),
        images=images,
        targets=rows["label"].map(lookup).to_numpy(dtype=np.int64),
        classes=classes,
    )
