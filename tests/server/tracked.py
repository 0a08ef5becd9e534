"""Project copies for the team tests: the session's tiny pipeline run, tracking into the
tracking server as a teammate's clone would."""

from mlflow.tracking import MlflowClient

from tests.project import copy_of_template
from tests.server.conftest import Server
from tests.server.test_server import ServerProject


def server_copy(server: Server, tmp_path_factory, name: str) -> ServerProject:
    """A private copy of the session's tiny pipeline run whose commands track into server.
    Its outputs came from the project's own store: `dvc repro --force --single-item train`
    trains its model again into the server."""
    return ServerProject(copy_of_template(tmp_path_factory, name).root, tracking=server.env())


def admin_client(server: Server, monkeypatch) -> MlflowClient:
    """A client of server as its admin, through MLflow's credential variables."""
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", server.username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", server.password)
    return MlflowClient(server.uri)
