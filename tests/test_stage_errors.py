"""Bad input stops a stage before any work, with one line naming what to fix, and leaves no
output behind that looks valid."""

import pytest

from tests.conftest import write_image_folder
from tests.project import ProjectCopy


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> ProjectCopy:
    return ProjectCopy.create(tmp_path_factory.mktemp("errors"))


def fails(project: ProjectCopy, stage: str, *overrides: str) -> str:
    result = project.run("python", "-m", f"stages.{stage}", *overrides, check=False)
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Traceback" not in output
    return output


def test_unknown_key_is_refused_by_hydra_before_training(project):
    output = fails(project, "train", "train.lrr=0.1")
    assert "train.lrr" in output
    assert not (project.root / "models/model.safetensors").exists()


def test_appended_unknown_key_is_refused_by_the_schema(project):
    output = fails(project, "split", "+split.sed=3")
    assert output.strip().splitlines() == [
        line for line in output.strip().splitlines() if "split.sed" in line
    ]
    assert not (project.root / "data/split/split.parquet").exists()


def test_missing_data_folder(project, tmp_path):
    missing = tmp_path / "nope"
    output = fails(project, "ingest", "data.source=folder", f"data.root={missing}")
    expected = (
        f"error: data.root={missing}: no such folder; point it at a folder of class subfolders"
    )
    assert output.strip() == expected
    assert not (project.root / "data/ingested/manifest.parquet").exists()
    assert not list((project.root / "data/ingested").glob("images.npy*"))


def test_empty_dataset(project, tmp_path):
    (tmp_path / "empty").mkdir()
    output = fails(project, "ingest", "data.source=folder", f"data.root={tmp_path / 'empty'}")
    assert "no images found" in output and len(output.strip().splitlines()) == 1


def test_class_too_small_for_the_split(project, tmp_path):
    root = write_image_folder(tmp_path / "photos", {"many": 10, "few": 2})
    project.run(
        "python",
        "-m",
        "stages.ingest",
        "data.source=folder",
        f"data.root={root}",
        "data.image_size=8",
    )
    output = fails(project, "split")
    assert "'few' (2)" in output and len(output.strip().splitlines()) == 1
    assert not (project.root / "data/split/split.parquet").exists()


def test_a_stage_sweep_over_data_or_split_keys_is_refused(project):
    output = fails(project, "train", "-m", "split.seed=1,2", "train.epochs=1")
    assert "dvc exp run --queue -S split.seed=1,2" in output
    assert not (project.root / "multirun").exists()
