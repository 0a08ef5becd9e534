"""The dataset version a run names (pipeline.data.lineage): read from DVC's own files, never
showing a credential, and "unknown" rather than wrong when dvc.lock describes other data."""

import yaml

from pipeline.core.io import file_md5
from pipeline.core.paths import Paths
from pipeline.data.lineage import dataset_version
from tests.conftest import compose_config


def project_with_dataset(root, remote_url: str):
    (root / ".dvc").mkdir(parents=True)
    (root / ".dvc/config").write_text(
        f"[core]\n    remote = team\n['remote \"team\"']\n    url = {remote_url}\n"
    )
    (root / "data/raw/shapes").mkdir(parents=True)
    (root / "data/raw/shapes.dvc").write_text("outs:\n- md5: abc.dir\n  path: shapes\n")
    manifest = root / "data/ingested/manifest.parquet"
    manifest.parent.mkdir(parents=True)
    manifest.write_bytes(b"the ingested manifest")
    return Paths(root)


def write_lock(paths: Paths, manifest_md5: str) -> None:
    ingest = {
        "deps": [{"path": "data/raw/shapes", "md5": "0123.dir"}],
        "outs": [{"path": "data/ingested/manifest.parquet", "md5": manifest_md5}],
    }
    (paths.root / "dvc.lock").write_text(yaml.safe_dump({"stages": {"ingest": ingest}}))


def test_a_run_names_the_locked_md5_and_the_remote_without_its_password(tmp_path):
    paths = project_with_dataset(tmp_path, "https://alice:s3cret@dvc.example.org/store")
    write_lock(paths, file_md5(paths.manifest))
    data = compose_config("data=folder", "data.root=data/raw/shapes").data
    assert dataset_version(data, paths) == {
        "dataset.path": "data/raw/shapes",
        "dataset.md5": "0123.dir",
        "dataset.source": "dvc remote https://dvc.example.org/store",
    }


def test_the_md5_is_unknown_when_dvc_lock_describes_other_data(tmp_path):
    paths = project_with_dataset(tmp_path, "/mnt/team/dvc")
    write_lock(paths, "an md5 of an earlier manifest")
    data = compose_config("data=folder", "data.root=data/raw/shapes").data
    assert dataset_version(data, paths)["dataset.md5"] == "unknown"
