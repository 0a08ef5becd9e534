"""pipeline/core/workspace.py's checks against a real git repository holding DVC's executor ref
(the end-to-end race of two `dvc exp run` is tests/faults/test_concurrent_experiments.py)."""

import os
import subprocess

import pytest

from pipeline.core.errors import StagewiseError
from pipeline.core.workspace import EXEC_MERGE, ParamsGuard
from tests.project import GIT_IDENTITY


def git(root, *args: str) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=root,
        env={**os.environ, **GIT_IDENTITY},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A repo whose params.yaml was stashed by `dvc exp run` for experiment `mine`."""
    git(tmp_path, "init", "-q")
    (tmp_path / "params.yaml").write_text("train:\n  lr: 0.01\n")
    git(tmp_path, "add", "params.yaml")
    git(tmp_path, "commit", "-qm", "dvc-exp:abc:abc:mine")
    git(tmp_path, "update-ref", EXEC_MERGE, "HEAD")
    monkeypatch.setenv("DVC_EXP_NAME", "mine")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    return tmp_path


def test_the_experiments_own_parameters_pass(workspace):
    ParamsGuard.start(workspace, "train").check()


def test_parameters_rewritten_by_another_experiment_stop_the_stage(workspace):
    guard = ParamsGuard.start(workspace, "train")
    (workspace / "params.yaml").write_text("train:\n  lr: 0.02\n")
    with pytest.raises(StagewiseError, match=r"another `dvc exp run`.*dvc exp run --queue"):
        guard.check()


def test_another_experiments_refs_or_none_stop_the_stage(workspace):
    guard = ParamsGuard.start(workspace, "train")
    git(workspace, "commit", "-q", "--allow-empty", "-m", "dvc-exp:abc:abc:theirs")
    git(workspace, "update-ref", EXEC_MERGE, "HEAD")
    with pytest.raises(StagewiseError, match="experiment mine ran"):
        guard.check()
    git(workspace, "update-ref", "-d", EXEC_MERGE)  # what the failed experiment's cleanup does
    with pytest.raises(StagewiseError, match="experiment mine ran"):
        guard.check()


def test_outside_an_experiment_a_changed_params_file_still_stops_the_stage(workspace, monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME")
    guard = ParamsGuard.start(workspace, "evaluate")
    guard.check()
    (workspace / "params.yaml").write_text("train:\n  lr: 0.03\n")
    with pytest.raises(StagewiseError, match=r"params\.yaml changed while evaluate ran"):
        guard.check()
