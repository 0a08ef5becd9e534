"""Split strategies: which images train, which validate, which are held out for the test.

The split is stratified and seeded: every class keeps its share in every split, and the same
ids + seed always give the same assignment, whatever order the rows arrive in.
"""

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import SplitConfig
from pipeline.data import class_names, load_images, load_manifest
from pipeline.errors import StagewiseError
from pipeline.paths import Paths

SPLITS = ("train", "valid", "test")
STRATEGIES = ("random",)


def split_sizes(n: int, valid_pct: float, test_pct: float) -> tuple[int, int, int]:
    """(train, valid, test) counts for a class of n images; a non-zero share gets >= 1 image."""

    def share(pct: float) -> int:
        return max(1, math.floor(n * pct + 0.5)) if pct > 0 else 0

    n_valid, n_test = share(valid_pct), share(test_pct)
    return n - n_valid - n_test, n_valid, n_test


def check_split_config(cfg: SplitConfig) -> None:
    if cfg.strategy not in STRATEGIES:
        raise StagewiseError(f"split.strategy={cfg.strategy!r} is unknown; use one of {STRATEGIES}")
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


def random_split(manifest: pd.DataFrame, cfg: SplitConfig) -> pd.DataFrame:
    """Seeded stratified split: a frame with columns id, split (train/valid/test), sorted by id."""
    check_split_config(cfg)
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
    return pd.concat(assigned).sort_values("id", ignore_index=True)


def ids_digest(ids: pd.Series) -> str:
    """sha256 of the sorted ids: equal digests mean exactly the same images."""
    return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def split_report(manifest: pd.DataFrame, split: pd.DataFrame, cfg: SplitConfig) -> dict:
    """Counts per split and class, and a digest of each split's ids."""
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
