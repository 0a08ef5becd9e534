"""ingest on messy real-world files: every bad file is listed with its reason, every good one
is decoded with the right orientation and channels; fastai-style labelling and tables."""

import json
import os
import re

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.errors import StagewiseError
from pipeline.core.paths import Paths
from pipeline.data import ingest as data
from pipeline.data.ingest import ingest
from pipeline.data.store import load_images, load_manifest
from stages import ingest as stages_ingest
from tests import images
from tests.conftest import compose_config, write_image_folder

FOLDER = ("data=folder", "data.image_size=8", "data.max_bad_fraction=0.5")


@pytest.fixture
def messy(tmp_path):
    root = tmp_path / "photos"
    images.rotated_jpeg(root / "a" / "rotated.jpg")
    images.palette_png(root / "a" / "palette.png")
    images.rgba_png(root / "a" / "rgba.png")
    images.sixteen_bit_png(root / "b" / "sixteen.png")
    images.grey_jpeg(root / "b" / "grey.jpg")
    images.cmyk_jpeg(root / "b" / "cmyk.jpg")
    images.la_png(root / "b" / "la.png")
    images.truncated_jpeg(root / "b" / "truncated.jpg")
    images.write_bytes(root / "a" / "empty.jpg", b"")
    images.write_bytes(root / "a" / "notes.jpg", b"this is text, not a JPEG")
    images.solid_png(root / "b" / "huge.png", (1, 2, 3), size=(1200, 1000))
    images.write_bytes(root / "a" / "readme.txt", b"not listed: wrong extension")
    return root


def run_ingest(tmp_path, *overrides):
    result = ingest(compose_config(*FOLDER, *overrides).data, tmp_path / "images.npy")
    by_id = result.manifest.set_index("id")
    return result, by_id, load_images(tmp_path / "images.npy")


def test_report_lists_exactly_the_bad_files_with_reasons(messy, tmp_path):
    result, _, _ = run_ingest(tmp_path, f"data.root={messy}", "data.max_pixels=1000000")
    reasons = {bad["id"]: bad["reason"] for bad in result.report["bad_files"]}
    assert set(reasons) == {"a/empty.jpg", "a/notes.jpg", "b/truncated.jpg", "b/huge.png"}
    assert reasons["a/empty.jpg"] == "empty file (0 bytes)"
    assert reasons["a/notes.jpg"].startswith("not an image")
    assert "truncated" in reasons["b/truncated.jpg"]
    assert reasons["b/huge.png"].startswith(
        "too large: 1200x1000 = 1200000 pixels > data.max_pixels=1000000"
    )
    assert len(result.manifest) == 7


def test_good_files_are_oriented_and_converted_to_rgb(messy, tmp_path):
    _, rows, store = run_ingest(tmp_path, f"data.root={messy}", "data.max_pixels=1000000")

    def pixels(image_id):
        return store[rows.loc[image_id, "index"]].astype(int)

    rotated = pixels("a/rotated.jpg")
    assert (rows.loc["a/rotated.jpg", ["height", "width"]] == [20, 10]).all()
    assert rotated[0, :, 0].min() > 150 and rotated[-1, :, 2].min() > 150  # red on top, blue below
    palette = pixels("a/palette.png")
    assert (palette[:, :3] == 255).all() and (
        palette[:, 5:] == [0, 200, 0]
    ).all()  # transparent -> white
    rgba = pixels("a/rgba.png")
    assert (rgba[0] == images.BLUE).all() and (rgba[-1] == 255).all()
    assert (pixels("b/sixteen.png") == 255).all()  # 65535 is full scale, not clipped garbage
    assert (abs(pixels("b/grey.jpg") - 128) <= 1).all()
    cmyk = pixels("b/cmyk.jpg")
    assert cmyk[..., 0].min() > 200 and cmyk[..., 1:].max() < 60
    assert (pixels("b/la.png") == 50).all()
    modes = rows["mode"].to_dict()
    assert (
        modes["a/palette.png"] == "P"
        and modes["b/cmyk.jpg"] == "CMYK"
        and modes["b/sixteen.png"].startswith("I")
    )
    assert store.shape[1:] == (8, 8, 3)


def test_greyscale_output_and_padding(tmp_path):
    root = tmp_path / "photos"
    images.solid_png(root / "x" / "wide.png", (255, 255, 255), size=(16, 8))
    images.solid_png(root / "y" / "tall.png", (255, 255, 255), size=(8, 16))
    _, rows, store = run_ingest(tmp_path, f"data.root={root}", "data.channels=1", "data.resize=pad",
                                "data.background=[0,0,0]")  # fmt: skip
    wide = store[rows.loc["x/wide.png", "index"], :, :, 0]
    assert store.shape[1:] == (8, 8, 1)
    assert (
        (wide[2:6] == 255).all() and (wide[0] == 0).all() and (wide[-1] == 0).all()
    )  # letterboxed


def test_too_many_bad_files_fail(messy, tmp_path):
    with pytest.raises(StagewiseError, match=r"ingest: 4 of 11 files are unusable"):
        run_ingest(
            tmp_path, f"data.root={messy}", "data.max_pixels=1000000", "data.max_bad_fraction=0.2"
        )
    assert not list(tmp_path.glob("images.npy*"))


@pytest.fixture
def with_copies(tmp_path):
    root = tmp_path / "photos"
    for i in range(4):
        images.solid_png(root / "cat" / f"{i}.png", (10 * i + 5, 0, 0))
        images.solid_png(root / "dog" / f"{i}.png", (0, 10 * i + 5, 0))
    (root / "dog" / "copy_of_cat_1.png").write_bytes((root / "cat" / "1.png").read_bytes())
    return root


def test_duplicates_are_reported_and_dropped_by_default(with_copies, tmp_path):
    result, rows, _ = run_ingest(tmp_path, f"data.root={with_copies}")
    assert result.report["duplicates"] == [
        {"kept": "cat/1.png", "same_bytes": ["dog/copy_of_cat_1.png"]}
    ]
    assert "dog/copy_of_cat_1.png" not in rows.index and len(rows) == 8


def test_duplicates_policy_keep_all_and_fail(with_copies, tmp_path):
    _, rows, _ = run_ingest(tmp_path, f"data.root={with_copies}", "data.duplicates=keep_all")
    assert "dog/copy_of_cat_1.png" in rows.index
    with pytest.raises(StagewiseError, match=r"byte-identical.*dog/copy_of_cat_1.png = cat/1.png"):
        run_ingest(tmp_path, f"data.root={with_copies}", "data.duplicates=fail")


@pytest.fixture
def pets(tmp_path):
    root = tmp_path / "pets"
    for name, color in [("Abyssinian_1", (1, 0, 0)), ("Abyssinian_2", (2, 0, 0)),
                        ("beagle_1", (3, 0, 0)), ("beagle_12", (4, 0, 0)), ("Maine_Coon_3", (5, 0, 0))]:  # fmt: skip
        images.solid_png(
            root / f"{name}.jpg", color
        )  # PNG bytes under .jpg: decoders sniff content
    images.solid_png(root / "odd name.jpg", (6, 0, 0))
    return root


def test_label_from_file_name_regex(pets, tmp_path):
    result, rows, _ = run_ingest(
        tmp_path, f"data.root={pets}", "data.label=regex", r"data.label_regex='^(.+)_\d+\.jpg$'"
    )
    assert rows["label"].to_dict() == {
        "Abyssinian_1.jpg": "Abyssinian", "Abyssinian_2.jpg": "Abyssinian", "Maine_Coon_3.jpg": "Maine_Coon",
        "beagle_1.jpg": "beagle", "beagle_12.jpg": "beagle",
    }  # fmt: skip
    assert [bad["id"] for bad in result.report["bad_files"]] == ["odd name.jpg"]


def test_boolean_label_like_fastai_is_cat(pets, tmp_path):
    _, rows, _ = run_ingest(
        tmp_path, f"data.root={pets}", "data.label=regex", "data.label_regex='^[A-Z]'"
    )
    assert (
        rows.loc["Abyssinian_1.jpg", "label"] == "True"
        and rows.loc["beagle_1.jpg", "label"] == "False"
    )
    assert rows.loc["odd name.jpg", "label"] == "False"


def test_table_source_with_groups_and_times(tmp_path):
    folder = tmp_path / "shots"
    for i in range(6):
        images.solid_png(folder / "img" / f"{i}.png", (i, i, i))
    table = pd.DataFrame({
        "path": [f"img/{i}.png" for i in range(6)],
        "label": ["x", "y"] * 3,
        "group": ["g1", "g1", "g2", "g2", "g3", "g3"],
        "time": [f"2024-01-0{i + 1}T10:00:00" for i in range(6)],
    })  # fmt: skip
    table.to_csv(folder / "labels.csv", index=False)
    cfg = compose_config("data=table", f"data.root={folder}", "data.image_size=8")
    result = ingest(cfg.data, tmp_path / "images.npy")
    rows = result.manifest.set_index("id")
    assert rows.loc["img/3.png", "group"] == "g2" and rows.loc["img/3.png", "label"] == "y"
    assert rows.loc["img/5.png", "time"] == "2024-01-06T10:00:00"  # as written: split reads it
    assert rows.loc["img/2.png", "path"] == str(folder / "img" / "2.png")


def test_table_with_missing_columns_is_named(tmp_path):
    (tmp_path / "t.csv").write_text("file,class\na.png,x\n")
    cfg = compose_config("data=table", f"data.root={tmp_path}", f"data.table={tmp_path / 't.csv'}")
    with pytest.raises(StagewiseError, match=r"missing column\(s\) label, path"):
        ingest(cfg.data, tmp_path / "images.npy")


def test_parallel_decode_matches_sequential(tmp_path, monkeypatch):
    root = tmp_path / "many"
    rng = np.random.default_rng(0)
    for i in range(data.PARALLEL_MIN_ITEMS + 6):
        images.save(
            root / f"c{i % 3}" / f"{i:03d}.png",
            images.Image.fromarray(rng.integers(0, 256, (12, 9, 3), dtype=np.uint8)),
        )
    cfg = compose_config("data=folder", f"data.root={root}", "data.image_size=6")
    monkeypatch.setattr(data, "workers", lambda: 2)
    parallel = ingest(cfg.data, tmp_path / "parallel.npy")
    monkeypatch.setattr(data, "workers", lambda: 1)
    sequential = ingest(cfg.data, tmp_path / "sequential.npy")
    pd.testing.assert_frame_equal(parallel.manifest, sequential.manifest)
    np.testing.assert_array_equal(
        load_images(tmp_path / "parallel.npy"), load_images(tmp_path / "sequential.npy")
    )


def ingest_stage(tmp_path, *overrides) -> tuple[pd.DataFrame, dict]:
    """The real ingest stage into tmp_path/project: (the manifest it wrote, its report)."""
    paths = Paths(tmp_path / "project")
    stages_ingest.run(compose_config("data.image_size=8", *overrides), paths)
    return load_manifest(paths.manifest), json.loads(paths.ingest_report.read_text())


def test_file_names_that_are_not_utf8_are_ingested(tmp_path):
    # Linux names are bytes: a Latin-1 'café.png' and class folder 'crème' are not UTF-8.
    root = write_image_folder(tmp_path / "photos", {"a": 3, "b": 3})
    os.rename(root / "a" / "0.png", os.path.join(os.fsencode(root / "a"), b"caf\xe9.png"))
    os.rename(root / "b", os.path.join(os.fsencode(root), b"cr\xe8me"))
    manifest, report = ingest_stage(tmp_path, "data=folder", f"data.root={root}")
    assert report["bad_files"] == [] and len(manifest) == 6
    assert report["classes"] == {"a": 3, "cr\\xe8me": 3}
    row = manifest.set_index("id").loc["a/caf\\xe9.png"]
    assert row["path"] == f"{root}/a/caf\\xe9.png" and row["label"] == "a"


def test_an_escaped_name_that_collides_with_a_real_one_is_named(tmp_path):
    root = write_image_folder(tmp_path / "photos", {"a": 2, "b": 2})
    os.rename(root / "a" / "0.png", os.path.join(os.fsencode(root / "a"), b"caf\xe9.png"))
    images.solid_png(root / "a" / "caf\\xe9.png", (9, 9, 9))  # literally backslash, x, e, 9
    with pytest.raises(StagewiseError, match=re.escape("folder lists a/caf\\xe9.png twice")):
        ingest_stage(tmp_path, "data=folder", f"data.root={root}")


@pytest.fixture
def labelled_folder(tmp_path):
    return write_image_folder(tmp_path / "data", {"x": 4, "y": 4})


def test_rows_without_a_label_are_skipped_and_reported(labelled_folder, tmp_path):
    table = labelled_folder / "labels.csv"
    rows = ["x/0.png,x", "x/1.png,", "x/2.png,x", "x/3.png, ", "y/0.png,nan", "y/1.png,NaN",
            "y/2.png,y", "y/3.png,None"]  # fmt: skip
    table.write_text("path,label\n" + "\n".join(rows) + "\n")
    manifest, report = ingest_stage(
        tmp_path, "data=table", f"data.root={labelled_folder}", "data.max_bad_fraction=0.9"
    )
    assert sorted(manifest["label"]) == ["x", "x", "y"]  # no '', 'nan', 'NaN' or 'None' class
    assert [(bad["row"], bad["id"]) for bad in report["bad_files"]] == [
        (2, "x/1.png"), (4, "x/3.png"), (5, "y/0.png"), (6, "y/1.png"), (8, "y/3.png"),
    ]  # fmt: skip
    assert {bad["reason"] for bad in report["bad_files"]} == {"no label: the label column is empty"}


def test_parquet_rows_without_a_label_are_skipped_and_integer_labels_stay_integers(
    labelled_folder, tmp_path
):
    paths = [f"{c}/{i}.png" for c in "xy" for i in range(3)]  # 6 of the 8 images
    table = labelled_folder / "labels.parquet"
    # written by pyarrow, as by polars or Spark: no pandas metadata to restore the dtype from
    pq.write_table(pa.table({"path": paths, "label": [0, 0, None, 1, 1, None]}), table)
    manifest, report = ingest_stage(
        tmp_path,
        "data=table",
        f"data.root={labelled_folder}",
        f"data.table={table}",
        "data.max_bad_fraction=0.5",
    )
    assert sorted(manifest["label"]) == ["0", "0", "1", "1"]  # not "0.0" or "nan"
    assert [(bad["row"], bad["id"]) for bad in report["bad_files"]] == [
        (3, "x/2.png"), (6, "y/2.png"),
    ]  # fmt: skip


@pytest.fixture
def escaping_table(tmp_path, labelled_folder):
    """A table under data/ whose rows 4-7 point out of data/ by ../, an absolute path, a
    symlink and /etc/passwd; every target outside is a real image (or file)."""
    outside = tmp_path / "elsewhere"
    for i in range(3):
        images.solid_png(outside / f"{i}.png", (200, 10 * i, 0))
    (labelled_folder / "x" / "link.png").symlink_to(outside / "2.png")
    rows = ["x/0.png,x", "x/1.png,x", "y/0.png,y", "../elsewhere/0.png,x",
            f"{outside / '1.png'},y", "x/link.png,x", "/etc/passwd,y", "y/1.png,y"]  # fmt: skip
    table = labelled_folder / "labels.csv"
    table.write_text("path,label\n" + "\n".join(rows) + "\n")
    return table


def test_table_paths_outside_the_root_are_refused_and_reported(escaping_table, tmp_path):
    manifest, report = ingest_stage(tmp_path, "data=table", f"data.root={escaping_table.parent}",
                                    "data.max_bad_fraction=0.6")  # fmt: skip
    assert sorted(manifest["id"]) == ["x/0.png", "x/1.png", "y/0.png", "y/1.png"]
    refused = {bad["row"]: bad for bad in report["bad_files"]}
    assert sorted(refused) == [4, 5, 6, 7]
    reason = f"outside data.root {escaping_table.parent}; set data.allow_outside_root=true"
    assert all(bad["reason"].startswith(reason) for bad in refused.values())
    assert refused[7]["id"] == "/etc/passwd" and refused[4]["id"] == "../elsewhere/0.png"


def test_allow_outside_root_reads_the_table_paths_as_given(escaping_table, tmp_path):
    manifest, report = ingest_stage(tmp_path, "data=table", f"data.root={escaping_table.parent}",
                                    "data.allow_outside_root=true", "data.max_bad_fraction=0.2")  # fmt: skip
    assert len(manifest) == 7 and "x/link.png" in set(manifest["id"])
    assert [(bad["row"], bad["id"]) for bad in report["bad_files"]] == [(7, "/etc/passwd")]
    assert report["bad_files"][0]["reason"].startswith("not an image")


def test_a_repeated_table_row_is_named(labelled_folder, tmp_path):
    table = labelled_folder / "labels.csv"
    table.write_text("path,label\nx/0.png,x\ny/0.png,y\nx/1.png,x\n./x/0.png,y\n")
    with pytest.raises(StagewiseError, match=r"labels.csv: row 4 \(x/0.png\) repeats row 1"):
        ingest_stage(tmp_path, "data=table", f"data.root={labelled_folder}")
