"""The dataset is an input with a content hash (README, "Versioning a dataset"): for every
source, an added, removed or changed image or a changed label reruns ingest and nothing changed
is a no-op; a dataset version added with `dvc add` is restored by `git checkout` + `dvc
checkout` (or pulled from a folder or S3 remote into a fresh clone), and `dvc repro` then
gives back its model, byte for byte; each training run names the dataset version it used."""

import gzip
import shutil
from pathlib import Path

import pandas as pd
import pytest

from tests import images
from tests.project import TINY, ProjectCopy, mlflow_client, ran_stages
from tests.s3 import BUCKET, add_remotes

pytestmark = pytest.mark.e2e

SHAPES = "data/raw/shapes"
UP_TO_DATE = "Data and pipelines are up to date."


def write_shapes(folder: Path, classes: dict[str, range]) -> None:
    """One distinct solid 8x8 PNG per (class, number), in its class folder."""
    for label, numbers in classes.items():
        for i in numbers:
            images.solid_png(folder / label / f"{i}.png", (10 * i % 256, ord(label[0]), 90))


def manifest(project: ProjectCopy) -> pd.DataFrame:
    return pd.read_parquet(project.root / "data/ingested/manifest.parquet").set_index("id")


def reingested(project: ProjectCopy) -> bool:
    """Whether `dvc repro ingest` ran ingest again (else it must say all is up to date)."""
    result = project.run("dvc", "repro", "ingest")
    ran = ran_stages(result.stdout) == ["ingest"]
    assert ran or UP_TO_DATE in result.stdout, result.stdout
    return ran


@pytest.fixture(scope="module")
def fresh(tmp_path_factory) -> ProjectCopy:
    return ProjectCopy.create(tmp_path_factory.mktemp("versions") / "project")


def test_every_change_to_a_dvc_added_folder_reruns_ingest_and_nothing_else_does(fresh):
    folder = fresh.root / SHAPES
    write_shapes(folder, {"a": range(4), "b": range(4)})
    fresh.run("dvc", "add", SHAPES)
    fresh.compose("data=folder", f"data.root={SHAPES}", "data.image_size=8")
    assert reingested(fresh) and len(manifest(fresh)) == 8
    assert not reingested(fresh)

    write_shapes(folder, {"a": [20]})  # an added image
    assert reingested(fresh) and "a/20.png" in manifest(fresh).index
    images.solid_png(folder / "b" / "1.png", (1, 2, 3))  # changed bytes
    before = manifest(fresh).loc["b/1.png", "sha256"]
    assert reingested(fresh) and manifest(fresh).loc["b/1.png", "sha256"] != before
    (folder / "a" / "0.png").unlink()  # a removed image
    assert reingested(fresh) and "a/0.png" not in manifest(fresh).index
    (folder / "a" / "3.png").rename(folder / "b" / "3.png")  # relabelled: another class folder
    assert reingested(fresh) and manifest(fresh).loc["b/3.png", "label"] == "b"
    assert not reingested(fresh)
    # `dvc repro` recorded the version it used in the .dvc file (git add it to keep it)
    recorded = fresh.run("dvc", "status", f"{SHAPES}.dvc").stdout
    assert "changed" not in recorded, recorded


def test_a_changed_label_in_a_table_outside_the_project_reruns_ingest(fresh, tmp_path):
    outside = tmp_path / "shared-disk"
    write_shapes(outside / "img", {"x": range(3), "y": range(3)})
    rows = [f"img/{c}/{i}.png,{c}" for c in "xy" for i in range(3)]
    (outside / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    fresh.compose("data=table", f"data.root={outside}", "data.image_size=8")
    assert reingested(fresh) and not reingested(fresh)
    rows[0] = "img/x/0.png,y"
    (outside / "labels.csv").write_text("path,label\n" + "\n".join(rows) + "\n")
    assert reingested(fresh) and manifest(fresh).loc["img/x/0.png", "label"] == "y"


def test_a_changed_embedded_digits_file_reruns_ingest(fresh):
    fresh.compose()
    assert reingested(fresh) and not reingested(fresh)
    digits = fresh.root / "data/raw/digits/digits.csv.gz"
    rows = gzip.decompress(digits.read_bytes()).splitlines(keepends=True)
    digits.write_bytes(gzip.compress(b"".join(rows[:-1])))  # one digit fewer
    assert reingested(fresh) and len(manifest(fresh)) == len(rows) - 1


@pytest.fixture(scope="module")
def versioned(tmp_path_factory, s3) -> tuple[ProjectCopy, dict[str, str]]:
    """A project whose dataset has two tagged versions, each trained (tiny) and pushed to a
    folder remote (the default) and an S3 one: ({version tag: its model's md5})."""
    project = ProjectCopy.create(tmp_path_factory.mktemp("tagged") / "project")
    add_remotes(project, tmp_path_factory.mktemp("dvc-remote"), s3, "versions")
    folder = project.root / SHAPES
    models = {}
    for tag, classes in {
        "v1": {"a": range(10), "b": range(10)},
        "v2": {"a": range(10, 16)},
    }.items():
        write_shapes(folder, classes)
        project.compose(*TINY, "data=folder", f"data.root={SHAPES}", "data.image_size=8")
        project.run("dvc", "add", SHAPES)
        project.run("dvc", "repro", "train")
        project.run("git", "add", "--all")
        project.run("git", "commit", "-qm", f"shapes {tag}")
        project.run("git", "tag", tag)
        project.run("dvc", "push")
        project.run("dvc", "push", "--remote", "team-s3")
        models[tag] = project.lock_outs("train")["models/model.safetensors"]
    assert models["v1"] != models["v2"]
    return project, models


def image_count(project: ProjectCopy) -> int:
    return sum(1 for _ in (project.root / SHAPES).rglob("*.png"))


def test_checking_out_a_tag_restores_its_images_and_repro_gives_back_its_model(versioned):
    project, models = versioned
    project.run("git", "checkout", "-q", "v1")
    project.run("dvc", "checkout")
    assert image_count(project) == 20
    assert UP_TO_DATE in project.run("dvc", "repro", "train").stdout
    shutil.rmtree(project.root / "data/ingested")  # rebuilt from the images, not restored
    result = project.run("dvc", "repro", "--force", "train")
    assert ran_stages(result.stdout)[:2] == ["ingest", "split"], result.stdout
    assert project.lock_outs("train")["models/model.safetensors"] == models["v1"]
    # -f: the rerun is a new MLflow run, so models/run.json and its md5 in dvc.lock differ
    project.run("git", "checkout", "-q", "-f", "v2")
    project.run("dvc", "checkout")
    assert image_count(project) == 26


@pytest.mark.parametrize("remote", ["team", "team-s3"])
def test_a_fresh_clone_pulls_a_tagged_dataset_version_from_the_remote(
    versioned, remote, s3, tmp_path, monkeypatch
):
    project, models = versioned
    clone = ProjectCopy(tmp_path / "clone")
    project.run("git", "clone", "-q", "--branch", "v1", str(project.root), str(clone.root))
    for variable, value in s3.env().items():  # a teammate's own keys, as boto3 reads them
        monkeypatch.setenv(variable, value)
    clone.run("dvc", "pull", "--remote", remote)
    assert image_count(clone) == 20
    assert UP_TO_DATE in clone.run("dvc", "repro", "train").stdout
    assert clone.lock_outs("train")["models/model.safetensors"] == models["v1"]


def test_each_training_run_names_the_dataset_version_it_used(versioned):
    project, _ = versioned
    remote = project.run("dvc", "remote", "list").stdout.split()[1]  # the default, a folder
    client = mlflow_client(project)
    experiment = client.get_experiment_by_name("stagewise").experiment_id
    runs = client.search_runs([experiment], "tags.stage = 'train'", order_by=["start_time"])
    versions = []
    for tag, run in zip(["v1", "v2"], runs[:2], strict=True):
        shapes = yaml_md5(project.run("git", "show", f"{tag}:{SHAPES}.dvc").stdout)
        assert run.data.tags["dataset.md5"] == shapes
        assert run.data.tags["dataset.path"] == SHAPES
        assert run.data.tags["dataset.source"] == f"dvc remote {remote}"
        raw = [i for i in run.inputs.dataset_inputs if i.dataset.name == "shapes"]
        assert len(raw) == 1 and raw[0].dataset.digest == shapes.removesuffix(".dir")
        versions.append(shapes)
    assert versions[0] != versions[1]


def yaml_md5(dvc_file: str) -> str:
    import yaml

    return yaml.safe_load(dvc_file)["outs"][0]["md5"]


def test_imported_datasets_name_their_source_and_an_update_reruns_ingest(
    fresh, s3, tmp_path, monkeypatch
):
    import boto3

    from pipeline.core.paths import Paths
    from pipeline.data.lineage import dataset_version
    from tests.conftest import compose_config

    registry = ProjectCopy(tmp_path / "registry")  # another DVC repository, e.g. a data registry
    registry.root.mkdir()
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        registry.run(*command)
    write_shapes(registry.root / "shapes", {"a": range(2), "b": range(2)})
    registry.run("dvc", "add", "shapes")
    registry.run("git", "add", "--all")
    registry.run("git", "commit", "-qm", "shapes")
    fresh.run("dvc", "import", str(registry.root), "shapes", "-o", "data/raw/registry")

    bucket = boto3.resource("s3", endpoint_url=s3.endpoint, region_name="us-east-1",
                            aws_access_key_id=s3.key_id, aws_secret_access_key=s3.secret)  # fmt: skip
    write_shapes(tmp_path / "lake", {"a": range(3), "b": range(3)})
    for path in sorted((tmp_path / "lake").rglob("*.png")):
        bucket.Bucket(BUCKET).upload_file(str(path), f"lake/{path.relative_to(tmp_path / 'lake')}")
    for variable, value in s3.env().items():
        monkeypatch.setenv(variable, value)
    lake = f"s3://{BUCKET}/lake"
    fresh.run(
        "dvc", "import-url", lake, "data/raw/lake", "--fs-config", f"endpointurl={s3.endpoint}"
    )

    rev = registry.run("git", "rev-parse", "HEAD").stdout.strip()
    for root, source in [
        ("data/raw/registry", f"dvc import {registry.root} shapes@{rev}"),
        ("data/raw/lake", f"dvc import-url {lake}"),
    ]:
        data = compose_config("data=folder", f"data.root={root}").data
        assert dataset_version(data, Paths(fresh.root))["dataset.source"] == source

    fresh.compose("data=folder", "data.root=data/raw/lake", "data.image_size=8")
    assert reingested(fresh) and len(manifest(fresh)) == 6
    write_shapes(tmp_path / "more", {"a": [9]})
    bucket.Bucket(BUCKET).upload_file(str(tmp_path / "more/a/9.png"), "lake/a/9.png")
    fresh.run("dvc", "update", "data/raw/lake.dvc")
    assert reingested(fresh) and len(manifest(fresh)) == 7
