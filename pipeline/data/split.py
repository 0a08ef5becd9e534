"""Split strategies: which images train, which validate, which are held out for the test.

The split is stratified and seeded: every class keeps its share in every split (every label
too, as far as the label sets allow, for multi-label data; regression targets are not
stratified), and the same ids + seed always give the same assignment, whatever order the
rows arrive in.
"""

import hashlib
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core.config import SplitConfig, Strategy
from pipeline.core.errors import StagewiseError
from pipeline.core.paths import Paths
from pipeline.data.store import load_images, load_manifest
from pipeline.tasks.kinds import SINGLE_LABEL, Stratify, TaskKind

SPLITS = ("train", "valid", "test")
# What split.time_unit reads the table's time column as (auto: iso, or s/ms by magnitude).
TIME_UNITS = {
    "auto": "ISO-8601 date/times or Unix timestamps",
    "iso": "ISO-8601 date/times (like 2024-05-01T12:00:00Z)",
    "s": "Unix timestamps in seconds",
    "ms": "Unix timestamps in milliseconds",
}
# Unix time 1e11 is the year 5138 in seconds but 1973 in milliseconds: for any date from 1973
# to 5138, smaller numbers are seconds and larger ones milliseconds.
MS_FROM = 1e11

log = logging.getLogger("stagewise")


def split_sizes(n: int, valid_pct: float, test_pct: float) -> tuple[int, int, int]:
    """(train, valid, test) counts for a class of n images; a non-zero share gets >= 1 image."""

    def share(pct: float) -> int:
        return max(1, math.floor(n * pct + 0.5)) if pct > 0 else 0

    n_valid, n_test = share(valid_pct), share(test_pct)
    return n - n_valid - n_test, n_valid, n_test


def check_split_config(cfg: SplitConfig) -> None:
    """The shares' ranges; the schema (pipeline.core.config) already refused an unknown strategy."""
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


def assign_splits(
    manifest: pd.DataFrame, cfg: SplitConfig, kind: TaskKind = SINGLE_LABEL
) -> pd.DataFrame:
    """The configured strategy's split: a frame with columns id, split, sorted by id."""
    check_split_config(cfg)
    if cfg.strategy == Strategy.random:
        randoms = {
            Stratify.classes: random_split,
            Stratify.label_sets: label_sets_split,
            Stratify.none: shuffled_split,
        }
        split = randoms[kind.stratify](manifest, cfg, kind)
    elif cfg.strategy == Strategy.group:
        split = group_split(manifest, cfg, kind)
    else:
        strategies = {"time": time_split, "folder": folder_split, "list": list_split}
        split = strategies[cfg.strategy](manifest, cfg)
    split = split.sort_values("id", ignore_index=True)
    check_split_sizes(split, cfg)
    if kind.stratify != Stratify.none:
        check_classes_train(manifest, split, kind)
    check_training_labels(manifest, split, kind)
    return split


def check_split_sizes(split: pd.DataFrame, cfg: SplitConfig) -> None:
    """Images in train and valid, and in test when split.test_pct asks for one: whatever the
    strategy and task (a few images round to empty shares, iterative stratification may leave
    a split short, folders or a list may lack one). A single-label random split never fails
    here: check_class_sizes gives every class an image in each split first."""
    counts = split["split"].value_counts()
    asks_test = cfg.strategy not in (Strategy.folder, Strategy.list) and cfg.test_pct > 0
    needed = ["train", "valid", *(["test"] if asks_test else [])]
    if not (empty := [name for name in needed if counts.get(name, 0) == 0]):
        return
    got = ", ".join(f"{name} {counts.get(name, 0)}" for name in SPLITS)
    fixes = {
        Strategy.folder: "add images to the empty split's folder under data.root",
        Strategy.list: "assign images to it in split.list_file",
    }
    fix = fixes.get(
        cfg.strategy,
        f"add images, or change split.valid_pct={cfg.valid_pct}/split.test_pct={cfg.test_pct}",
    )
    raise StagewiseError(
        f"split: {' and '.join(empty)} would have no images ({got} of {len(split)}); {fix}"
    )


def check_training_labels(manifest: pd.DataFrame, split: pd.DataFrame, kind: TaskKind) -> None:
    """What the task refuses at ingest (one class, a constant target, no label that varies),
    refused on the training images too: they are what the model learns from. Labels the same
    on every training image (or on none) that check lets through are a warning."""
    labels, names = training_labels(manifest, split, kind)
    kind.check(labels, "split", "the training images")
    if constant := kind.constant(labels, names):
        log.warning(kind.constant_warning(constant, "split", "the training images"))


def training_labels(
    manifest: pd.DataFrame, split: pd.DataFrame, kind: TaskKind
) -> tuple[pd.Series, list[str]]:
    """The train split's labels, and the model's outputs (kind.names of every image)."""
    train_ids = split.loc[split["split"] == "train", "id"]
    return manifest.loc[manifest["id"].isin(train_ids), "label"], kind.names(manifest["label"])


def random_split(manifest: pd.DataFrame, cfg: SplitConfig, kind: TaskKind) -> pd.DataFrame:
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


def shuffled_split(manifest: pd.DataFrame, cfg: SplitConfig, kind: TaskKind) -> pd.DataFrame:
    """Seeded random split, not stratified (regression targets have no classes)."""
    ids = np.sort(manifest["id"].to_numpy())
    n_train, n_valid, n_test = split_sizes(len(ids), cfg.valid_pct, cfg.test_pct)
    names = np.repeat(SPLITS, [n_train, n_valid, n_test])
    return pd.DataFrame({"id": ids, "split": np.random.default_rng(cfg.seed).permutation(names)})


def label_sets_split(manifest: pd.DataFrame, cfg: SplitConfig, kind: TaskKind) -> pd.DataFrame:
    """Seeded iterative stratification (Sechidis et al. 2011, the iterative-stratification
    package): each label keeps its share in each split as far as the label sets allow. The
    test images are drawn first, then the valid ones from the rest."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedShuffleSplit

    rows = manifest.sort_values("id")
    matrix = kind.indicator(rows["label"], kind.names(rows["label"]))
    if matrix.shape[1] == 1:  # one label: the splitter takes it for a binary target and refuses
        matrix = np.hstack([matrix, 1 - matrix])
    split = np.full(len(rows), "train", dtype=object)
    seed = cfg.seed
    rest = np.arange(len(rows))
    for name, pct in (("test", cfg.test_pct), ("valid", cfg.valid_pct / (1 - cfg.test_pct))):
        # at least one image out, one left: too few images leave a split empty, which
        # check_split_sizes refuses (the splitter itself would raise on taking them all)
        n_out = min(max(1, math.floor(len(rest) * pct + 0.5)), len(rest) - 1)
        if pct <= 0 or n_out < 1:
            continue
        splitter = MultilabelStratifiedShuffleSplit(n_splits=1, test_size=n_out, random_state=seed)
        _, out = next(splitter.split(np.zeros(len(rest)), matrix[rest]))
        split[rest[out]] = name
        rest = np.setdiff1d(rest, rest[out])
        seed += 1
    return pd.DataFrame({"id": rows["id"].to_numpy(), "split": split})


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


def group_split(manifest: pd.DataFrame, cfg: SplitConfig, kind: TaskKind) -> pd.DataFrame:
    """Whole groups to one split, stratified by class or label (see assign_groups)."""
    groups = group_labels(manifest, cfg.group_regex)
    # groups x classes image counts, rows and columns sorted: the same whatever the row order
    pairs = kind.pairs(manifest["label"])
    counts = pd.crosstab(groups.loc[pairs.index].to_numpy(), pairs.to_numpy())
    if len(counts) < 2 + (cfg.test_pct > 0):
        raise StagewiseError(
            f"split=group: only {len(counts)} group(s); need one per split at least"
        )
    shares = {
        "train": 1 - cfg.valid_pct - cfg.test_pct,
        "valid": cfg.valid_pct,
        "test": cfg.test_pct,
    }
    names = [name for name in SPLITS if shares[name] > 0]
    targets = np.outer([shares[name] for name in names], counts.sum().to_numpy())
    order = np.random.default_rng(cfg.seed).permutation(len(counts))
    placed = assign_groups(counts.to_numpy()[order], targets)
    split_of = dict(zip(counts.index[order], np.asarray(names)[placed], strict=True))
    return pd.DataFrame({"id": manifest["id"].to_numpy(), "split": groups.map(split_of).to_numpy()})


def assign_groups(counts: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """The split of each group (counts: groups x classes, in seeded order; targets: splits x
    classes, the images each split should get), in the spirit of scikit-learn's
    StratifiedGroupKFold: each group goes where it best brings every class towards its share.

    Hand-written because StratifiedGroupKFold makes k equal folds (no 0.7/0.15/0.15 shares)
    and promises no class in any one fold. First, for each class (fewest groups first), one of
    its groups goes to each split that lacks the class, train first, while the class has groups
    left; so a class with a group per split is in every split. Then the other groups follow in
    seeded order. Ties go to the group first in seeded order, or to the split least full (then
    train, valid, test): the seed decides them, and no float noise does.
    """
    filled = np.zeros_like(targets, dtype=float)
    placed = np.full(len(counts), -1)

    def cost(groups: np.ndarray, split: int) -> np.ndarray:
        """How much adding each group changes the split's distance to its per-class targets."""
        before = np.abs(filled[split] - targets[split]).sum()
        after = np.abs(filled[split] + counts[groups] - targets[split]).sum(axis=-1)
        return np.round(after - before, 9)  # float noise must not break ties

    def place(group: int, split: int) -> None:
        placed[group] = split
        filled[split] += counts[group]

    for label in np.argsort((counts > 0).sum(axis=0), kind="stable"):
        for split in range(len(targets)):
            free = np.flatnonzero((placed < 0) & (counts[:, label] > 0))
            if filled[split, label] == 0 and len(free):
                place(free[np.argmin(cost(free, split))], split)
    for group in np.flatnonzero(placed < 0):
        changes = [cost(np.array(group), split) for split in range(len(targets))]
        fullness = filled.sum(axis=1) / targets.sum(axis=1)
        place(group, int(np.lexsort((fullness, changes))[0]))
    return placed


def detect_time_unit(values: pd.Series, configured: str) -> str:
    """The unit of the manifest's time texts: split.time_unit, or for auto: iso unless every
    value is a number, then seconds or milliseconds by magnitude."""
    if configured != "auto":
        return configured
    present = values.dropna()
    numbers = pd.to_numeric(present, errors="coerce")
    if present.empty or numbers.isna().any():
        return "iso"
    large = (numbers.abs() >= MS_FROM).to_numpy()
    if large.any() and not large.all():
        raise StagewiseError(
            f"split: the time column mixes seconds and milliseconds (e.g. {present[~large].iloc[0]!r} "
            f"and {present[large].iloc[0]!r}); make them one unit in the table"
        )
    return "ms" if large.all() else "s"


def parse_times(values: pd.Series, unit: str) -> pd.Series:
    """Time texts (as in the table) -> UTC timestamps; ISO-8601 without a zone is taken as UTC."""
    if unit == "iso":
        parsed = pd.to_datetime(values, utc=True, format="ISO8601", errors="coerce")
    else:
        parsed = pd.to_datetime(
            pd.to_numeric(values, errors="coerce"), unit=str(unit), utc=True, errors="coerce"
        )
    if (bad := parsed.isna() & values.notna()).any():
        raise StagewiseError(
            f"split: {int(bad.sum())} value(s) of the time column are not {TIME_UNITS[unit]}, "
            f"e.g. {values[bad].iloc[0]!r}; fix the table, or set split.time_unit "
            f"({', '.join(TIME_UNITS)})"
        )
    return parsed


def image_times(manifest: pd.DataFrame, configured: str) -> tuple[pd.Series, str]:
    """Each image's time (indexed like manifest) and the unit it was read in."""
    if manifest["time"].isna().any():
        raise StagewiseError(
            "split=time needs a time for every image: use data=table with a time column"
        )
    texts = manifest.sort_values("id")["time"]  # examples in errors: the first ids
    unit = detect_time_unit(texts, configured)
    return parse_times(texts, unit).reindex(manifest.index), unit


def time_split(manifest: pd.DataFrame, cfg: SplitConfig) -> pd.DataFrame:
    """Oldest images train; the next valid_pct validate; the latest test_pct are the test set."""
    times, _ = image_times(manifest, cfg.time_unit)
    rows = manifest.assign(time=times).sort_values(["time", "id"])
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


def check_classes_train(manifest: pd.DataFrame, split: pd.DataFrame, kind: TaskKind) -> None:
    """Every class (label) must have training images; one missing from valid or test is
    reported."""
    joined = manifest[["id", "label"]].merge(split, on="id")
    names = kind.names(joined["label"])
    pairs = kind.pairs(joined["label"])
    present = pd.DataFrame({"split": joined["split"].loc[pairs.index], "name": pairs})
    in_split = present.groupby("split")["name"].unique()
    untrained = sorted(set(names) - set(in_split.get("train", [])))
    if untrained:
        raise StagewiseError(
            f"split: class(es) {untrained} have no training images under split.strategy; "
            "add images or choose another split"
        )
    for name in ("valid", "test"):
        if name in in_split and (absent := sorted(set(names) - set(in_split[name]))):
            log.warning("split: class(es) %s have no %s images", absent, name)


def known_groups(manifest: pd.DataFrame, cfg: SplitConfig) -> pd.Series | None:
    """Each image's group when groups are known: the group split's, or a complete group column."""
    if cfg.strategy == "group":
        return group_labels(manifest, cfg.group_regex)
    if manifest["group"].notna().all():
        return group_labels(manifest, None)
    return None


def leakage(manifest: pd.DataFrame, split: pd.DataFrame, cfg: SplitConfig) -> dict:
    """What crosses split boundaries: groups (when groups are known) and identical images."""
    joined = manifest.merge(split, on="id", validate="one_to_one")
    checks: dict = {"groups_checked": False, "group_overlap": []}
    if (groups := known_groups(joined, cfg)) is not None:
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


def split_report(
    manifest: pd.DataFrame, split: pd.DataFrame, cfg: SplitConfig, kind: TaskKind = SINGLE_LABEL
) -> dict:
    """Counts per split and class, a digest of each split's ids, the groups of each class in
    each split (when groups are known), the time unit and range of a time split, and the
    leakage checks."""
    joined = manifest.merge(split, on="id", validate="one_to_one")
    groups = known_groups(joined, cfg)
    in_split = {name: joined["split"] == name for name in SPLITS}
    report = {
        "strategy": cfg.strategy,
        "seed": cfg.seed,
        "splits": {
            name: {
                "images": int(rows.sum()),
                kind.counts_key: kind.counts(joined.loc[rows, "label"]) if rows.any() else {},
                "digest": ids_digest(joined.loc[rows, "id"]),
            }
            for name, rows in in_split.items()
        },
    }
    if groups is not None:
        for name, per_class in groups_per_class(joined, groups, kind).items():
            report["splits"][name]["groups"] = per_class
    if cfg.strategy == "time":
        report["time"] = time_ranges(joined, cfg.time_unit)
    if constant := kind.constant(*training_labels(manifest, split, kind)):
        report["constant_labels"] = constant  # on every training image or on none
    report["leakage"] = leakage(manifest, split, cfg)
    return report


def groups_per_class(
    joined: pd.DataFrame, groups: pd.Series, kind: TaskKind
) -> dict[str, dict[str, list[str]]]:
    """{split: {class or label: sorted group names}} of a manifest joined with its split
    (regression: {"(images)": groups})."""
    pairs = kind.pairs(joined["label"])
    found = pd.DataFrame(
        {
            "split": joined["split"].loc[pairs.index],
            "label": pairs,
            "group": groups.loc[pairs.index],
        }
    ).groupby(["split", "label"])["group"]
    per_class: dict[str, dict[str, list[str]]] = {name: {} for name in SPLITS}
    for (name, label), names in found.unique().items():
        per_class[name][str(label)] = sorted(map(str, names))
    return per_class


def time_ranges(joined: pd.DataFrame, configured: str) -> dict:
    """The unit the time column was read in and each split's first and last time (UTC), so a
    wrong unit shows (e.g. 1970 dates from milliseconds read as seconds)."""
    times, unit = image_times(joined, configured)
    by_split = times.groupby(joined["split"])
    return {
        "unit": unit,
        "range": {
            name: [by_split.min()[name].isoformat(), by_split.max()[name].isoformat()]
            for name in SPLITS
            if name in by_split.groups
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
class SplitRows:
    """One split as rows of the array store, without reading its images."""

    ids: np.ndarray
    rows: np.ndarray  # indices into the array store, in id order
    targets: np.ndarray  # kind.encode: class indices into `classes`, a label matrix, or values
    classes: list[str]
    store: Path  # the .npy array store
    image_shape: tuple[int, ...]  # H x W x C

    @property
    def nbytes(self) -> int:
        """The split's images in memory (uint8)."""
        return len(self.rows) * int(np.prod(self.image_shape))

    def read(self) -> np.ndarray:
        """The split's images, read whole into memory."""
        return np.asarray(load_images(self.store)[self.rows])


@dataclass(frozen=True)
class SplitImages:
    ids: np.ndarray
    images: np.ndarray  # N x H x W x C uint8, in memory
    targets: np.ndarray  # kind.encode: class indices into `classes`, a label matrix, or values
    classes: list[str]


def load_split_rows(paths: Paths, name: str, kind: TaskKind = SINGLE_LABEL) -> SplitRows:
    """Where the images of one split (train, valid or test) are in the array store, and their
    targets (class indices, label matrix or target values: kind.encode), in id order.

    Only test-holdout may ask for "test": the holdout is used once, at the end.
    """
    manifest = load_manifest(paths.manifest)
    split = load_split_table(paths.split)
    classes = kind.names(manifest["label"])
    rows = manifest.set_index("index").loc[split_indices(manifest, split, name)]
    return SplitRows(
        ids=rows["id"].to_numpy(),
        rows=rows.index.to_numpy(),
        targets=kind.encode(rows["label"], classes),
        classes=classes,
        store=paths.images,
        image_shape=tuple(load_images(paths.images).shape[1:]),
    )


def load_split_images(paths: Paths, name: str, kind: TaskKind = SINGLE_LABEL) -> SplitImages:
    """The images (in memory) and targets of one split, in id order."""
    rows = load_split_rows(paths, name, kind)
    return SplitImages(ids=rows.ids, images=rows.read(), targets=rows.targets, classes=rows.classes)
