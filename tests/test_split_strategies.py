"""Group, time, folder and list splits, and the leakage checks that guard every split."""

import json
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.core.errors import StagewiseError
from pipeline.core.paths import Paths
from pipeline.data.ingest import ingest
from pipeline.data.split import assign_splits, enforce_leakage, leakage, split_report
from stages import ingest as ingest_stage
from stages import split as split_stage
from tests import images
from tests.conftest import compose_config
from tests.test_split import toy_manifest


def groups_of(n: int, size: int) -> list[str]:
    return [f"driver{i // size:02d}" for i in range(n)]


def run_table_stages(
    root: Path, table: pd.DataFrame, *overrides: str, name: str = "labels.csv"
) -> tuple[pd.DataFrame, dict]:
    """The real ingest and split stages on a table (CSV, or parquet by name) of
    path,label[,group][,time] in root: (the split, its report). Each path gets a tiny PNG."""
    for i, path in enumerate(sorted(table["path"])):
        if not (root / path).exists():
            images.solid_png(root / path, (i % 256, i // 256 * 40, 90), size=(4, 4))
    if name.endswith(".parquet"):
        table.to_parquet(root / name, index=False)
    else:
        table.to_csv(root / name, index=False)
    paths = Paths(root / "project")
    cfg = compose_config("data=table", f"data.root={root}", f"data.table={root / name}", "data.image_size=4",
                         *overrides)  # fmt: skip
    ingest_stage.run(cfg, paths)
    split_stage.run(cfg, paths)
    return pd.read_parquet(paths.split), json.loads(paths.split_report.read_text())


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
    times = pd.date_range("2024-01-01", periods=100, freq="h", tz="UTC")[::-1]  # newest first
    manifest["time"] = times.strftime("%Y-%m-%dT%H:%M:%S%z")  # text, as ingest writes it
    split = assign_splits(manifest, compose_config("split=time").split)
    timed = manifest.assign(time=times).merge(split, on="id").groupby("split")["time"]
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


def test_group_split_keeps_every_class_in_valid_and_test():
    # 12 groups of 10 images, 4 groups per class: filling test, then valid, with whole groups in
    # random order left one class out of valid and another out of test.
    manifest = toy_manifest({"a": 40, "b": 40, "c": 40}, group=groups_of(120, 10))
    cfg = compose_config("split=group").split
    for seed in range(5):
        split = assign_splits(manifest, replace(cfg, seed=seed))
        classes = manifest.merge(split, on="id").groupby("split")["label"].nunique()
        assert classes.to_dict() == {"test": 3, "train": 3, "valid": 3}, seed
        shuffled = manifest.sample(frac=1, random_state=seed)
        pd.testing.assert_frame_equal(split, assign_splits(shuffled, replace(cfg, seed=seed)))


def test_group_split_through_the_stages_lists_groups_per_class(tmp_path):
    table = pd.DataFrame({
        "path": [f"img/{i:03d}.png" for i in range(36)],
        "label": [("cat", "dog", "owl")[i // 12] for i in range(36)],
        "group": groups_of(36, 3),
    })  # fmt: skip
    split, report = run_table_stages(tmp_path, table, "split=group")
    listed = {name: part["groups"] for name, part in report["splits"].items()}
    assert all(set(per_class) == {"cat", "dog", "owl"} for per_class in listed.values())
    everywhere = sorted(g for per_class in listed.values() for gs in per_class.values() for g in gs)
    assert everywhere == sorted(set(table["group"]))  # each group listed once, in one split
    group_of = table.set_index("path")["group"]
    assert (split.groupby(split["id"].map(group_of))["split"].nunique() == 1).all()
    assert report["leakage"]["groups_checked"] and report["leakage"]["group_overlap"] == []


def test_group_split_of_uneven_groups_keeps_each_class_near_its_shares():
    sizes = np.random.default_rng(0).integers(1, 16, size=45)
    labels = np.repeat(["a", "b", "c"], 15)
    manifest = toy_manifest(
        {}, id=[f"img{i:04d}" for i in range(sizes.sum())],
        label=np.repeat(labels, sizes), group=np.repeat([f"g{i:02d}" for i in range(45)], sizes),
        sha256=[f"{i:064x}" for i in range(sizes.sum())],
    )  # fmt: skip
    split = assign_splits(manifest, compose_config("split=group").split)
    shares = pd.crosstab(
        manifest["label"], manifest.merge(split, on="id")["split"], normalize="index"
    )
    assert ((shares[["valid", "test"]] > 0.12) & (shares[["valid", "test"]] < 0.28)).all().all()


def test_a_class_with_two_groups_trains_and_validates_but_misses_test(caplog):
    manifest = toy_manifest({"a": 40, "b": 10}, group=groups_of(50, 5))
    with caplog.at_level(logging.WARNING, logger="stagewise"):
        split = assign_splits(manifest, compose_config("split=group").split)
    present = manifest.merge(split, on="id").groupby("split")["label"].unique()
    assert "b" in present["train"] and "b" in present["valid"] and "b" not in present["test"]
    assert "class(es) ['b'] have no test images" in caplog.text


def test_time_split_reads_unix_milliseconds_through_the_stages(tmp_path):
    start = 1_700_000_000_000  # 2023-11-14 in milliseconds
    table = pd.DataFrame({
        "path": [f"img/{i:02d}.png" for i in range(10)],
        "label": ["x", "y"] * 5,
        "time": [start + 3_600_000 * i for i in range(10)],
    }).sample(frac=1, random_state=0)  # fmt: skip
    split, report = run_table_stages(tmp_path, table, "split=time")
    assert report["time"]["unit"] == "ms"
    assert report["time"]["range"]["train"] == [
        "2023-11-14T22:13:20+00:00", "2023-11-15T03:13:20+00:00"
    ]  # fmt: skip
    assert (
        split.set_index("id")["split"].sort_index().tolist()
        == ["train"] * 6 + ["valid"] * 2 + ["test"] * 2
    )


def test_time_split_reads_a_parquet_column_of_unix_seconds(tmp_path):
    table = pd.DataFrame({
        "path": [f"img/{i}.png" for i in range(8)],
        "label": ["x", "y"] * 4,
        "time": np.arange(8, dtype=np.int64)[::-1] * 86_400 + 1_700_000_000,  # newest first
    })  # fmt: skip
    split, report = run_table_stages(tmp_path, table, "split=time", name="labels.parquet")
    manifest = pd.read_parquet(tmp_path / "project/data/ingested/manifest.parquet")
    assert manifest.set_index("id").loc["img/0.png", "time"] == "1700604800"  # as written
    assert report["time"] == {"unit": "s", "range": {
        "train": ["2023-11-14T22:13:20+00:00", "2023-11-17T22:13:20+00:00"],
        "valid": ["2023-11-18T22:13:20+00:00", "2023-11-19T22:13:20+00:00"],
        "test": ["2023-11-20T22:13:20+00:00", "2023-11-21T22:13:20+00:00"]}}  # fmt: skip
    assert split.set_index("id").loc["img/0.png", "split"] == "test"


def time_split_of(times: list, *overrides: str) -> tuple[list[str], dict]:
    """(the split of images img000.. in id order, the split report's time section)."""
    manifest = toy_manifest({"a": len(times)}, label=["a", "b"] * (len(times) // 2), time=times)
    cfg = compose_config(
        "split=time", "split.valid_pct=0.25", "split.test_pct=0.25", *overrides
    ).split
    split = assign_splits(manifest, cfg)
    return split["split"].tolist(), split_report(manifest, split, cfg)["time"]


def test_time_split_orders_iso_times_by_instant_with_or_without_a_zone():
    # As text, "08:00" (UTC) sorts after "12:00+05:00" (07:00 UTC), and "2024-01-01T09" after
    # "2024-01-01 10": only parsed instants give the true order.
    times = ["2024-01-01T12:00:00+05:00", "2024-01-01T08:00:00", "2024-01-01T09:00:00Z",
             "2024-01-01 10:00:00"]  # fmt: skip
    names, section = time_split_of(times)
    assert names == ["train", "train", "valid", "test"] and section["unit"] == "iso"
    assert section["range"]["test"] == ["2024-01-01T10:00:00+00:00"] * 2


def test_time_split_reads_unix_seconds_and_the_unit_can_be_set():
    seconds = [str(1_700_000_000 + 60 * i) for i in range(4)]
    names, section = time_split_of(seconds[::-1])
    assert names == ["test", "valid", "train", "train"] and section["unit"] == "s"
    # ISO basic dates are numbers too: auto reads them as seconds (1970, ranges show it), iso as dates
    basic = ["20240104", "20240101", "20240102", "20240103"]
    assert time_split_of(basic)[1]["range"]["test"][0].startswith("1970-08-23")
    names, section = time_split_of(basic, "split.time_unit=iso")
    assert section == {"unit": "iso", "range": {
        "train": ["2024-01-01T00:00:00+00:00", "2024-01-02T00:00:00+00:00"],
        "valid": ["2024-01-03T00:00:00+00:00"] * 2, "test": ["2024-01-04T00:00:00+00:00"] * 2}}  # fmt: skip
    assert names == ["test", "train", "train", "valid"]


@pytest.mark.parametrize(
    ("times", "unit", "message"),
    [
        (["2024-01-01", "yesterday", "2024-01-03", "2024-01-04"], "auto",
         "^split: 1 value\\(s\\) of the time column are not ISO-8601.*e.g. 'yesterday'"),
        (["2024-01-01", "1700000000", "2024-01-03", "2024-01-04"], "auto", "e.g. '1700000000'"),
        (["1700000000", "1700000001", "2024-01-03", "1700000003"], "s",
         "not Unix timestamps in seconds, e.g. '2024-01-03'"),
        (["1700000000", "1700000001000", "1700000002", "1700000003"], "auto",
         "mixes seconds and milliseconds"),
        (["1700000000", "1700000001", "1700000002", "1e30"], "ms", "in milliseconds, e.g. '1e30'"),
    ],
)  # fmt: skip
def test_unreadable_times_name_the_column_and_a_bad_value(times, unit, message):
    with pytest.raises(StagewiseError, match=message) as raised:
        time_split_of(times, f"split.time_unit={unit}")
    assert "the time column" in str(raised.value) and "\n" not in str(raised.value)
