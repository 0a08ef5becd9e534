"""Incremental ingest: after a change to the dataset, ingest decodes only the new or changed
images and copies the rest from its previous outputs, and writes the same bytes as a full
ingest into an empty folder would."""

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pipeline.core.paths import Paths
from pipeline.data.store import StoreWriter
from stages import ingest as stages_ingest
from tests import images
from tests.conftest import compose_config, write_image_folder
from tests.project import ProjectCopy, ran_stages

CLASSES = {"a": 3, "b": 3}  # 6 images: below ingest's process-pool threshold, so quick


def ingest_to(root: Path, folder: Path, *overrides: str) -> dict:
    """The real ingest stage on root's images into folder (kept between calls): its report."""
    paths = Paths(folder)
    cfg = compose_config("data=folder", f"data.root={root}", "data.image_size=8", *overrides)
    stages_ingest.run(cfg, paths)
    return json.loads(paths.ingest_report.read_text())


def outputs(folder: Path) -> tuple[bytes, bytes]:
    paths = Paths(folder)
    return paths.manifest.read_bytes(), paths.images.read_bytes()


def assert_same_as_full(root: Path, incremental: dict, folder: Path, *overrides: str) -> None:
    """folder's outputs (and report, but the counts) are a full ingest's, into a new folder."""
    full = ingest_to(root, folder.with_name("full"), *overrides)
    assert full["reused"] == 0
    assert outputs(folder) == outputs(folder.with_name("full"))
    counts = ("decoded", "reused")
    assert {k: v for k, v in incremental.items() if k not in counts} == {
        k: v for k, v in full.items() if k not in counts
    }


def add(root: Path) -> None:
    images.solid_png(root / "b" / "new.png", (1, 2, 3))


def remove(root: Path) -> None:
    (root / "a" / "1.png").unlink()


def change(root: Path) -> None:
    images.solid_png(root / "a" / "1.png", (4, 5, 6))


def relabel(root: Path) -> None:
    (root / "a" / "1.png").rename(root / "b" / "1-from-a.png")


def copy(root: Path) -> None:
    """A byte-identical copy: reused, then dropped as a duplicate, as a full ingest drops it."""
    shutil.copy(root / "a" / "0.png", root / "b" / "copy.png")


@pytest.mark.parametrize(
    ("edit", "decoded"), [(add, 1), (remove, 0), (change, 1), (relabel, 0), (copy, 0)]
)
def test_after_a_change_only_new_bytes_are_decoded_and_outputs_equal_a_full_ingest(
    tmp_path, edit: Callable[[Path], None], decoded: int
):
    root = write_image_folder(tmp_path / "photos", CLASSES)
    folder = tmp_path / "incremental"
    assert ingest_to(root, folder)["decoded"] == 6
    edit(root)
    report = ingest_to(root, folder)
    n_listed = sum(1 for _ in root.rglob("*.png"))
    assert (report["decoded"], report["reused"]) == (decoded, n_listed - decoded)
    assert_same_as_full(root, report, folder)


def test_a_relabelled_table_row_is_reused_and_equals_a_full_ingest(tmp_path):
    root = write_image_folder(tmp_path / "photos", CLASSES)
    rows = [f"{c}/{i}.png,{c}" for c in CLASSES for i in range(CLASSES[c])]
    table = root / "labels.csv"
    table.write_text("path,label\n" + "\n".join(rows) + "\n")
    overrides = ("data=table", f"data.table={table}")
    folder = tmp_path / "incremental"
    ingest_to(root, folder, *overrides)
    rows[0] = "a/0.png,b"
    table.write_text("path,label\n" + "\n".join(rows) + "\n")
    report = ingest_to(root, folder, *overrides)
    assert (report["decoded"], report["reused"]) == (0, 6)
    assert_same_as_full(root, report, folder, *overrides)


def test_another_decoding_setting_decodes_everything_again(tmp_path):
    root = write_image_folder(tmp_path / "photos", CLASSES)
    folder = tmp_path / "incremental"
    ingest_to(root, folder)
    report = ingest_to(root, folder, "data.resize=pad")  # same size, so the old store fits
    assert (report["decoded"], report["reused"]) == (6, 0)
    assert_same_as_full(root, report, folder, "data.resize=pad")


def garbage_manifest(paths: Paths) -> None:
    paths.manifest.write_bytes(b"not parquet")


def truncated_store(paths: Paths) -> None:
    paths.images.write_bytes(paths.images.read_bytes()[:-100])


def another_store(paths: Paths) -> None:
    """A store of the right shape written after the manifest (a crash between the two writes,
    a store copied from elsewhere): its rows are not the ones the manifest indexes."""
    store = np.load(paths.images)
    with StoreWriter(paths.images, store.shape[1:]) as writer:
        for image in store[::-1]:
            writer.append(image)
        writer.finish()


@pytest.mark.parametrize("spoil", [garbage_manifest, truncated_store, another_store])
def test_unusable_previous_outputs_mean_a_full_ingest_not_an_error(tmp_path, spoil):
    root = write_image_folder(tmp_path / "photos", CLASSES)
    folder = tmp_path / "incremental"
    ingest_to(root, folder)
    spoil(Paths(folder))
    report = ingest_to(root, folder)
    assert (report["decoded"], report["reused"]) == (6, 0)
    assert_same_as_full(root, report, folder)


@pytest.mark.e2e
def test_dvc_repro_after_an_added_image_equals_a_rerun_from_nothing(tmp_path):
    project = ProjectCopy.create(tmp_path / "project")
    photos = write_image_folder(project.root / "data/raw/photos", CLASSES)
    project.compose("data=folder", "data.root=data/raw/photos", "data.image_size=8")
    project.run("dvc", "repro", "ingest")
    add(photos)
    result = project.run("dvc", "repro", "ingest")
    assert ran_stages(result.stdout) == ["ingest"]
    report = project.json("data/ingested/report.json")
    assert (report["decoded"], report["reused"]) == (1, 6)  # DVC kept the outputs (persist)
    incremental = outputs(project.root)
    for out in (project.root / "data/ingested").iterdir():
        out.unlink()
    project.run("dvc", "repro", "--force", "ingest")
    assert project.json("data/ingested/report.json")["reused"] == 0
    assert outputs(project.root) == incremental
