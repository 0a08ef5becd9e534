"""A tracking store that cannot be used stops a stage at once, with one line saying which
store and what to do: not minutes of MLflow retries and pages of tracebacks."""

import socket
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.core.errors import StagewiseError
from pipeline.core.paths import Paths
from pipeline.tracking.store import check_sqlite, open_store, shown
from tests.project import ProjectCopy


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> ProjectCopy:
    return ProjectCopy.create(tmp_path_factory.mktemp("store"))


def free_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_stage(project: ProjectCopy, stage: str, **env: str) -> tuple[int, list[str], float]:
    start = time.monotonic()
    result = subprocess.run(
        ["python", "-m", f"stages.{stage}"],
        cwd=project.root,
        env={**project.env(), **env},
        capture_output=True,
        text=True,
    )
    lines = (result.stdout + result.stderr).strip().splitlines()
    return result.returncode, lines, time.monotonic() - start


def test_a_server_that_is_down_is_one_line_within_seconds_without_credentials(project):
    port = free_port()
    # compare: a tracking stage that starts in seconds (train's imports alone take seconds more)
    code, lines, seconds = run_stage(
        project, "compare", MLFLOW_TRACKING_URI=f"http://alice:s3cret@127.0.0.1:{port}"
    )
    assert code == 2 and len(lines) == 1, lines
    assert f"http://127.0.0.1:{port}" in lines[0] and "unreachable" in lines[0]
    assert "s3cret" not in lines[0] and "alice" not in lines[0]
    assert seconds < 10
    assert not (project.root / "comparison").exists()


def damage(db: Path) -> None:
    """What a full disk or a copy cut short leaves: the first half of the file."""
    data = db.read_bytes()
    db.write_bytes(data[: len(data) // 2])


def real_store(paths: Paths) -> None:
    store = open_store(paths)
    experiment = store.experiment_id("unit")
    for _ in range(3):
        store.client.set_terminated(store.client.create_run(experiment).info.run_id)


def test_a_damaged_sqlite_store_is_one_line_naming_the_file(project):
    paths = Paths(project.root)
    real_store(paths)
    damage(paths.mlruns / "mlflow.db")
    code, lines, _ = run_stage(project, "compare")
    assert code == 2 and len(lines) == 1, lines
    assert str(paths.mlruns / "mlflow.db") in lines[0] and "damaged" in lines[0]


def test_a_sound_store_passes_the_check_and_a_damaged_or_foreign_file_does_not(tmp_path):
    paths = Paths(tmp_path)
    real_store(paths)
    db = paths.mlruns / "mlflow.db"
    check_sqlite(db)
    damage(db)
    with pytest.raises(StagewiseError, match=r"mlflow\.db is damaged \(.*malformed"):
        check_sqlite(db)
    db.write_bytes(b"not sqlite at all, e.g. a Git LFS pointer" * 100)
    with pytest.raises(StagewiseError, match=r"mlflow\.db is damaged \(file is not a database"):
        check_sqlite(db)


def test_shown_uris_carry_no_credentials():
    assert shown("https://bob:pw@mlflow.example:8443/x") == "https://mlflow.example:8443/x"
    assert shown("https://token@mlflow.example") == "https://mlflow.example"
    assert shown("http://mlflow.example:5000") == "http://mlflow.example:5000"
