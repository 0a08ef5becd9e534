"""The team's DVC remote (README, "Team setup: DVC remote"): what one clone pushed, a fresh
git clone pulls, and then has nothing to reproduce, its model's run in the shared tracking
server. A folder (local or network path) and S3-compatible storage (moto's standalone
server) as remotes; credentials stay out of what git commits."""

import pytest

from tests.project import ran_stages
from tests.s3 import add_remotes
from tests.server.test_server import ServerProject
from tests.server.tracked import admin_client, server_copy

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pushed(server, s3, tmp_path_factory) -> ServerProject:
    """A clone whose pipeline ran against the server, committed, with the README's two
    remotes (a folder as the default `team`, S3 as `team-s3`), pushed to both."""
    project = server_copy(server, tmp_path_factory, "pusher")
    project.run("dvc", "repro", "--force", "--single-item", "train")  # its run in the server
    project.run("dvc", "repro")
    add_remotes(project, tmp_path_factory.mktemp("dvc-remote"), s3, "stagewise")
    project.run("git", "add", "--all")
    project.run("git", "commit", "-qm", "pipeline run against the team's server; remotes")
    project.run("dvc", "push")
    project.run("dvc", "push", "--remote", "team-s3")
    return project


@pytest.mark.parametrize("remote", ["team", "team-s3"])
def test_a_fresh_clone_pulls_the_outputs_and_has_nothing_to_reproduce(
    pushed, server, s3, remote, tmp_path_factory, monkeypatch
):
    root = tmp_path_factory.mktemp(f"clone-{remote}") / "project"
    pushed.run("git", "clone", "-q", str(pushed.root), str(root))
    clone = ServerProject(root, tracking={**server.env(), **s3.env()})
    assert not (root / "models/model.safetensors").exists()
    clone.run("dvc", "pull", "--remote", remote)
    result = clone.run("dvc", "repro")
    assert ran_stages(result.stdout) == [], result.stdout
    assert "Data and pipelines are up to date." in result.stdout
    run_id = clone.json("models/run.json")["run_id"]
    assert run_id == pushed.json("models/run.json")["run_id"]
    assert admin_client(server, monkeypatch).get_run(run_id).info.status == "FINISHED"


def test_no_credential_is_committed(pushed, server, s3):
    local = (pushed.root / ".dvc/config.local").read_text()
    assert s3.secret in local  # where `dvc remote modify --local` put it
    committed = pushed.run("git", "ls-files").stdout.split()
    assert ".dvc/config" in committed and ".dvc/config.local" not in committed
    for secret in (s3.key_id, s3.secret, server.password):
        found = pushed.run("git", "grep", "-I", "-F", "-e", secret, "HEAD", check=False)
        assert found.returncode == 1, found.stdout  # 1: no match
