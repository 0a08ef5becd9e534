"""ingest: digits and image folders -> manifest + uint8 array store; bad input is reported."""

import json
import os

import numpy as np
import pytest

from pipeline.core.errors import StagewiseError
from pipeline.core.paths import Paths
from pipeline.data.ingest import ingest
from pipeline.data.store import load_images, load_manifest
from pipeline.tasks.kinds import SingleLabel
from stages import ingest as ingest_stage
from tests.conftest import compose_config, write_image_folder
from tests.images import hostile_files


def test_digits_are_ingested_as_uint8_images(digits_paths: Paths):
    manifest = load_manifest(digits_paths.manifest)
    images = load_images(digits_paths.images)
    assert images.shape == (1797, 8, 8, 1) and images.dtype == np.uint8
    assert images.max() == 255 and images.min() == 0  # 0..16 stretched to the full range
    assert len(manifest) == 1797 and manifest["id"].is_unique
    assert SingleLabel().names(manifest["label"]) == [str(d) for d in range(10)]
    assert list(manifest["index"]) == list(range(1797))
    report = json.loads(digits_paths.ingest_report.read_text())
    assert report["images"] == 1797 and report["bad_files"] == []


def test_digits_pixels_match_scikit_learn(digits_paths: Paths):
    from sklearn.datasets import load_digits

    manifest = load_manifest(digits_paths.manifest)
    images = load_images(digits_paths.images)
    digits = load_digits()
    row = manifest[manifest["id"] == "digits/0042"].iloc[0]
    expected = np.rint(digits.images[42] * 255 / 16)
    np.testing.assert_array_equal(images[row["index"], :, :, 0], expected)
    assert row["label"] == str(digits.target[42])


def test_folder_source_decodes_resizes_and_labels_by_parent(tmp_path):
    root = write_image_folder(tmp_path / "photos", {"cat": 3, "dog": 4})
    cfg = compose_config("data=folder", f"data.root={root}", "data.image_size=6")
    result = ingest(cfg.data, tmp_path / "images.npy")
    images = load_images(tmp_path / "images.npy")
    assert images.shape == (7, 6, 6, 3)
    assert sorted(result.manifest["label"]) == ["cat"] * 3 + ["dog"] * 4
    assert result.manifest["id"].tolist() == sorted(result.manifest["id"])
    assert (result.manifest[["height", "width"]].to_numpy() == [10, 12]).all()
    assert result.manifest["sha256"].str.len().eq(64).all()
    # a flat-colour image stays that colour after resizing
    first = result.manifest.iloc[0]
    assert (images[first["index"]] == images[first["index"]][0, 0]).all()


def test_unreadable_file_is_reported_not_fatal(tmp_path):
    root = write_image_folder(tmp_path / "photos", {"a": 10, "b": 10})
    (root / "a" / "broken.png").write_bytes(b"not an image")
    cfg = compose_config("data=folder", f"data.root={root}", "data.max_bad_fraction=0.1")
    result = ingest(cfg.data, tmp_path / "images.npy")
    assert len(result.manifest) == 20
    assert [bad["id"] for bad in result.report["bad_files"]] == ["a/broken.png"]
    assert load_images(tmp_path / "images.npy").shape[0] == 20


def test_hostile_files_are_reported_and_the_ingest_goes_on(tmp_path):
    """Files on which Pillow raises TypeError, struct.error, AttributeError or
    NotImplementedError; enough files that the decoding runs in the worker pool."""
    root = write_image_folder(tmp_path / "photos", {"a": 40, "b": 40})
    for name, raw in hostile_files().items():
        (root / "a" / name).write_bytes(raw)
    cfg = compose_config("data=folder", f"data.root={root}", "data.max_bad_fraction=0.1")
    paths = Paths(tmp_path / "project")
    ingest_stage.run(cfg, paths)
    report = json.loads(paths.ingest_report.read_text())
    reasons = {bad["id"]: bad["reason"] for bad in report["bad_files"]}
    assert sorted(reasons) == sorted(f"a/{name}" for name in hostile_files()), reasons
    assert all(reason.startswith("unreadable: ") for reason in reasons.values()), reasons
    assert "NotImplementedError" in reasons["a/dds_as.png"]
    assert report["images"] == 80 and load_images(paths.images).shape[0] == 80


@pytest.mark.parametrize(
    "keep", [0, 50, 128, -5], ids=["empty", "header-cut", "no-rows", "rows-cut"]
)
def test_a_truncated_store_is_named_with_the_fix_to_run(tmp_path, keep):
    store = tmp_path / "images.npy"
    np.save(store, np.zeros((10, 4, 4, 1), np.uint8))
    os.truncate(store, keep if keep >= 0 else store.stat().st_size + keep)
    with pytest.raises(
        StagewiseError, match=r"images\.npy is truncated or corrupt .*dvc repro -f ingest"
    ):
        load_images(store)


def test_too_many_bad_files_fail_without_leaving_a_store(tmp_path):
    root = write_image_folder(tmp_path / "photos", {"a": 2, "b": 2})
    (root / "a" / "broken.png").write_bytes(b"")
    cfg = compose_config("data=folder", f"data.root={root}", "data.max_bad_fraction=0.1")
    with pytest.raises(StagewiseError, match="max_bad_fraction"):
        ingest(cfg.data, tmp_path / "images.npy")
    assert list(tmp_path.glob("images.npy*")) == []


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda root: None, "no such folder"),
        (lambda root: root.mkdir(), "no images found"),
        (lambda root: write_image_folder(root, {"only": 3}), "only one class"),
    ],
    ids=["missing", "empty", "one-class"],
)
def test_bad_folders_fail_with_a_clear_message(tmp_path, make, message):
    root = tmp_path / "photos"
    make(root)
    cfg = compose_config("data=folder", f"data.root={root}")
    with pytest.raises(StagewiseError, match=message):
        ingest(cfg.data, tmp_path / "images.npy")
