"""split: seeded, stratified, disjoint, and strict about classes too small to split."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from pipeline.core.errors import StagewiseError
from pipeline.core.paths import Paths
from pipeline.data.split import (
    SPLITS,
    assign_splits,
    load_split_images,
    load_split_table,
    split_report,
    split_sizes,
)
from pipeline.data.store import load_manifest
from tests.conftest import compose_config

CFG = compose_config().split


def toy_manifest(counts: dict[str, int], **columns) -> pd.DataFrame:
    """A manifest like ingest writes: distinct images, no groups or times unless given."""
    labels = [label for label, n in counts.items() for _ in range(n)]
    n = len(labels)
    manifest = pd.DataFrame(
        {
            "id": [f"img{i:03d}" for i in range(n)],
            "label": labels,
            "group": None,
            "time": None,
            "folder_split": None,
            "sha256": [f"{i:064x}" for i in range(n)],
        }
    )
    for name, values in columns.items():
        manifest[name] = values
    return manifest


def test_every_image_gets_exactly_one_split_in_stratified_shares(digits_paths: Paths):
    manifest = load_manifest(digits_paths.manifest)
    split = load_split_table(digits_paths.split)
    assert sorted(split["id"]) == sorted(manifest["id"])
    joined = manifest.merge(split, on="id")
    for label, group in joined.groupby("label"):
        expected = split_sizes(len(group), CFG.valid_pct, CFG.test_pct)
        assert tuple((group["split"] == name).sum() for name in SPLITS) == expected, label


def test_split_is_reproducible_and_order_independent():
    manifest = toy_manifest({"a": 30, "b": 20})
    first = assign_splits(manifest, CFG)
    shuffled = assign_splits(manifest.sample(frac=1, random_state=3), CFG)
    pd.testing.assert_frame_equal(first, shuffled)


def test_seed_changes_the_split_and_its_digest():
    manifest = toy_manifest({"a": 30, "b": 20})
    one = split_report(manifest, assign_splits(manifest, CFG), CFG)
    other_cfg = replace(CFG, seed=CFG.seed + 1)
    two = split_report(manifest, assign_splits(manifest, other_cfg), other_cfg)
    again = split_report(manifest, assign_splits(manifest, CFG), CFG)
    assert one["splits"]["valid"]["digest"] != two["splits"]["valid"]["digest"]
    assert one == again


def test_report_counts_per_split_and_class(digits_paths: Paths):
    report = json.loads(digits_paths.split_report.read_text())
    assert sum(part["images"] for part in report["splits"].values()) == 1797
    for part in report["splits"].values():
        assert sum(part["classes"].values()) == part["images"]
        assert len(part["digest"]) == 64


def test_class_too_small_is_named():
    manifest = toy_manifest({"big": 20, "tiny": 2})
    with pytest.raises(StagewiseError, match=r"'tiny' \(2\).*at least 3"):
        assign_splits(manifest, CFG)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"valid_pct": 0.0}, "valid_pct must be > 0"),
        ({"valid_pct": 0.6, "test_pct": 0.4}, "leave images"),
        ({"test_pct": 1.5}, "test_pct"),
    ],
)
def test_bad_split_settings_fail_clearly(change, message):
    with pytest.raises(StagewiseError, match=message):
        assign_splits(toy_manifest({"a": 10, "b": 10}), replace(CFG, **change))


def test_split_sizes_round_and_keep_at_least_one():
    assert split_sizes(100, 0.2, 0.2) == (60, 20, 20)
    assert split_sizes(3, 0.2, 0.2) == (1, 1, 1)
    assert split_sizes(10, 0.25, 0.0) == (7, 3, 0)


def test_split_images_carry_targets_in_class_order(digits_paths: Paths):
    valid = load_split_images(digits_paths, "valid")
    assert valid.images.shape[1:] == (8, 8, 1) and valid.images.dtype == np.uint8
    assert len(valid.ids) == len(valid.targets) == len(valid.images)
    manifest = load_manifest(digits_paths.manifest).set_index("id")
    labels = manifest.loc[valid.ids, "label"].to_numpy()
    assert (np.array(valid.classes)[valid.targets] == labels).all()


@pytest.mark.parametrize(
    ("task", "labels", "overrides", "message"),
    [
        # iterative stratification put all five images in train
        ("multilabel", [["a", "b"], ["b"], ["a"], ["c"], ["c"]], [],
         "valid and test would have no images (train 5, valid 0, test 0 of 5)"),
        # the splitter raised a ValueError on drawing its only image
        ("multilabel", [["a"], ["a", "b"]], [],
         "valid would have no images (train 1, valid 0, test 1 of 2)"),
        ("regression", [{"x": 1.0}, {"x": 2.0}], [],
         "train would have no images (train 0, valid 1, test 1 of 2)"),
        ("single_label", ["a", "b"], ["split=time"],
         "valid and test would have no images (train 2, valid 0, test 0 of 2)"),
    ],
)  # fmt: skip
def test_a_split_leaving_train_valid_or_test_empty_is_refused_for_every_task(
    task, labels, overrides, message
):
    from pipeline.tasks.kinds import task_kind

    manifest = toy_manifest(
        {"x": len(labels)}, time=[f"2024-01-0{i + 1}" for i in range(len(labels))]
    )
    manifest["label"] = labels
    cfg = compose_config(f"task={task}", *overrides).split
    with pytest.raises(StagewiseError) as raised:
        assign_splits(manifest, cfg, task_kind(task))
    assert str(raised.value) == (
        f"split: {message}; add images, or change split.valid_pct=0.2/split.test_pct=0.2"
    )
