"""Group, time, folder and list splits, and the leakage checks that guard every split."""

import logging
from dataclasses import replace

import pandas as pd
import pytest

from pipeline.data import ingest
from pipeline.errors import StagewiseError
from pipeline.split import assign_splits, enforce_leakage, leakage, split_report
from tests import images
from tests.conftest import compose_config
from tests.test_split import toy_manifest


def groups_of(n: int, size: int) -> list[str]:
    return [f"driver{i // size:02d}" for i in range(n)]


def test_group_split_never_puts_a_group_in_two_splits():
    manifest = toy_manifest({"a": 60, "b": 60}, group=groups_of(120, 5))
    cfg = compose_config("split=group").split
    split = assign_splits(manifest, cfg)
    spread = manifest.merge(split, on="id").groupby("group")["split"].nunique()
    assert (spread == 1).all()
    counts = split["split"].value_counts()
    assert 15 <= counts["valid"] <= 35 and 15 <= counts["test"] <= 35  # about 20% each of 120
    report = split_report(manifest, split, cfg)
    assert report["leakage"]["groups_checked"] and report["leakage"]["group_overlap"] == []


def test_group_split_reads_groups_from_the_path_by_regex():
    manifest = toy_manifest({"a": 40, "b": 40})
    manifest["id"] = [f"p{i // 4:03d}_{i:04d}.jpg" for i in range(80)]
    cfg = compose_config("split=group", r"split.group_regex='^(p\d+)_'").split
    split = assign_splits(manifest, cfg)
    patients = split["id"].str[:4]
    assert (split.groupby(patients)["split"].nunique() == 1).all()
    assert split["split"].nunique() == 3


def test_group_split_changes_with_the_seed_but_is_stable():
    manifest = toy_manifest({"a": 60, "b": 60}, group=groups_of(120, 5))
    cfg = compose_config("split=group").split
    one, again = assign_splits(manifest, cfg), assign_splits(manifest, cfg)
    other = assign_splits(manifest, replace(cfg, seed=cfg.seed + 1))
    pd.testing.assert_frame_equal(one, again)
    assert not one.equals(other)


def test_random_split_of_grouped_data_is_caught_as_leakage(caplog):
    manifest = toy_manifest({"a": 60, "b": 60}, group=groups_of(120, 5))
    cfg = compose_config().split
    checks = leakage(manifest, assign_splits(manifest, cfg), cfg)
    assert checks["groups_checked"] and checks["group_overlap"]
    with pytest.raises(
        StagewiseError, match=r"split leaks: \d+ group\(s\) in several splits.*split=group"
    ):
        enforce_leakage(checks, "fail")
    with caplog.at_level(logging.WARNING, logger="stagewise"):
        enforce_leakage(checks, "warn")
    assert "split leaks" in caplog.text


def test_time_split_validates_on_the_future():
    manifest = toy_manifest({"a": 50, "b": 50})
    manifest["time"] = pd.date_range("2024-01-01", periods=100, freq="h", tz="UTC")[
        ::-1
    ]  # ids newest first
    split = assign_splits(manifest, compose_config("split=time").split)
    timed = manifest.merge(split, on="id").groupby("split")["time"]
    assert (
        timed.max()["train"] < timed.min()["valid"] and timed.max()["valid"] < timed.min()["test"]
    )
    assert split["split"].value_counts().to_dict() == {"train": 60, "valid": 20, "test": 20}


def test_time_split_needs_times():
    with pytest.raises(StagewiseError, match="split=time needs a time"):
        assign_splits(toy_manifest({"a": 5, "b": 5}), compose_config("split=time").split)


def test_list_split_follows_the_file_and_requires_every_image(tmp_path):
    manifest = toy_manifest({"a": 3, "b": 3})
    listing = pd.DataFrame({"id": manifest["id"], "split": ["train", "valid", "test"] * 2})
    listing.to_csv(tmp_path / "split.csv", index=False)
    cfg = compose_config("split=list", f"split.list_file={tmp_path / 'split.csv'}").split
    assert assign_splits(manifest, cfg)["split"].tolist() == listing["split"].tolist()
    listing.iloc[:-1].to_csv(tmp_path / "split.csv", index=False)
    with pytest.raises(StagewiseError, match=r"1 image\(s\) are not listed, e.g. 'img005'"):
        assign_splits(manifest, cfg)


def test_folder_split_and_a_planted_duplicate_across_splits_is_caught(tmp_path):
    root = tmp_path / "photos"
    for s, split_name in enumerate(("train", "valid", "test")):
        for c, label in enumerate(("cat", "dog")):
            for i in range(2):
                images.solid_png(
                    root / split_name / label / f"{i}.png", (40 * s + 10, 40 * c + 10, 40 * i + 10)
                )
    (root / "test" / "cat" / "planted.png").write_bytes(
        (root / "train" / "cat" / "0.png").read_bytes()
    )
    data_cfg = compose_config("data=folder", f"data.root={root}", "data.split_folders=true",
                              "data.duplicates=keep_all", "data.image_size=4").data  # fmt: skip
    manifest = ingest(data_cfg, tmp_path / "images.npy").manifest
    cfg = compose_config("split=folder").split
    split = assign_splits(manifest, cfg)
    assert split.set_index("id")["split"]["valid/dog/1.png"] == "valid"
    assert split["split"].value_counts().to_dict() == {"test": 5, "train": 4, "valid": 4}
    checks = split_report(manifest, split, cfg)["leakage"]
    assert checks["duplicate_images"] == [
        {"sha256": manifest.set_index("id").loc["train/cat/0.png", "sha256"],
         "ids": ["test/cat/planted.png", "train/cat/0.png"], "splits": ["test", "train"]}
    ]  # fmt: skip
    with pytest.raises(StagewiseError, match=r"1 identical image\(s\) in several splits"):
        enforce_leakage(checks, "fail")


def test_a_class_without_training_images_is_refused(tmp_path):
    manifest = toy_manifest({"a": 3, "b": 3})
    listing = pd.DataFrame({"id": manifest["id"], "split": ["train"] * 3 + ["valid"] * 3})
    listing.to_csv(tmp_path / "split.csv", index=False)
    cfg = compose_config("split=list", f"split.list_file={tmp_path / 'split.csv'}").split
    with pytest.raises(StagewiseError, match=r"class\(es\) \['b'\] have no training images"):
        assign_splits(manifest, cfg)
