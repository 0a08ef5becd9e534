"""The pipeline against a real tracking server (tests/server/conftest.py): the tiny pipeline,
credentials kept out of everything it writes, authentication, and the server going away.

One module, so one pytest worker runs these in order: the outage test stops the server."""

import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.project import TINY, ProjectCopy

pytestmark = pytest.mark.e2e

EPOCHS = 80  # the outage test's training: ~0.1 s an epoch, so it outlives the crash


@dataclass
class ServerProject(ProjectCopy):
    """A project copy whose commands track into the server, as a user's shell would."""

    tracking: dict[str, str] = field(default_factory=dict)
    outputs: list[subprocess.CompletedProcess] = field(default_factory=list)

    def env(self, warnings: bool = False) -> dict[str, str]:
        return {**super().env(warnings), **self.tracking}


@pytest.fixture(scope="module")
def project(tmp_path_factory, server) -> ServerProject:
    """A copy that ran the tiny pipeline up to evaluate against the server; its outputs (the
    commands' stdout and stderr) are in project.outputs."""
    copy = ServerProject.create(tmp_path_factory.mktemp("server") / "project")
    copy.tracking = server.env()
    copy.compose(*TINY)
    copy.outputs = [copy.run("dvc", "repro", "evaluate")]
    return copy


@pytest.fixture
def client(monkeypatch, server):
    """client(username=..., password=...): an MlflowClient of the server for that user (the
    admin by default), through MLflow's credential variables, as a user would set them."""
    from mlflow.tracking import MlflowClient

    def as_user(username: str = server.username, password: str = server.password):
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", username)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        return MlflowClient(server.uri)

    return as_user


def test_the_pipeline_tracks_into_the_server_and_its_model_loads_from_there(
    project, server, client
):
    import mlflow

    info = project.json("models/run.json")
    run = client().get_run(info["run_id"])
    assert run.info.status == "FINISHED"
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")  # served by the server
    steps = client().get_metric_history(info["run_id"], "epoch/valid_loss")
    assert sorted(m.step for m in steps) == [1, 2]
    assert run.data.metrics["valid_accuracy"] == pytest.approx(
        project.json("metrics/valid.json")["accuracy"]
    )
    mlflow.set_tracking_uri(server.uri)
    try:
        model = mlflow.pyfunc.load_model(info["model_uri"])
    finally:
        mlflow.set_tracking_uri(None)
    assert model.metadata.run_id == info["run_id"]
    weights = list((server.dir / "artifacts").glob("**/model.safetensors"))
    assert weights, "the model's weights are in the server's artifact store"


def test_credentials_appear_in_nothing_the_pipeline_wrote(project, server, client):
    run = client().get_run(project.json("models/run.json")["run_id"])
    secret = server.password
    written = [*run.data.params.values(), *run.data.tags.values()]
    assert not [text for text in written if secret in text]
    for result in project.outputs:
        assert secret not in result.stdout + result.stderr
    files = [p for p in project.root.rglob("*") if p.is_file()]
    files += [p for p in (server.dir / "artifacts").rglob("*") if p.is_file()]
    files += [server.dir / "mlflow.log", server.dir / "pg.log"]
    assert len(files) > 50 and (project.root / "dvc.lock") in files
    assert [p for p in files if secret.encode() in p.read_bytes()] == []


def test_no_credentials_get_401_and_a_read_only_user_cannot_create_runs(project, server, client):
    import mlflow
    import requests
    from mlflow.server import get_app_client

    answer = requests.get(f"{server.uri}/api/2.0/mlflow/experiments/search?max_results=5")
    assert answer.status_code == 401
    client()  # as admin
    users = get_app_client("basic-auth", tracking_uri=server.uri)
    name = f"reader-{uuid.uuid4().hex[:8]}"  # a server CI or a user reuses may have readers
    users.create_user(name, "reader-password-1234")
    experiment = client().get_run(project.json("models/run.json")["run_id"]).info
    reader = client(username=name, password="reader-password-1234")
    assert reader.get_experiment(experiment.experiment_id)  # READ: it may look
    with pytest.raises(mlflow.exceptions.MlflowException, match="Permission denied"):
        reader.create_run(experiment.experiment_id)
    wrong = client(username=name, password="not-the-password")
    with pytest.raises(mlflow.exceptions.MlflowException) as refused:
        wrong.get_experiment(experiment.experiment_id)
    assert "not-the-password" not in str(refused.value)


def with_credentials(uri: str, username: str, password: str) -> str:
    scheme, rest = uri.split("://", 1)
    return f"{scheme}://{username}:{password}@{rest}"


def test_credentials_inside_the_tracking_uri_are_never_printed(project, server, client):
    """A user who puts user:password@ in MLFLOW_TRACKING_URI (requests and MLflow accept it):
    MLflow prints that URI in each "View run ... at" line, so the stages move the credentials
    to MLflow's variables before anything is printed."""
    secret = server.password
    project.tracking = {
        "MLFLOW_TRACKING_URI": with_credentials(server.uri, server.username, secret)
    }
    try:
        results = [
            project.run("dvc", "repro", "--force", "--downstream", "train", "lr-find"),
            project.run("python", "-m", "stages.compare"),
        ]
    finally:
        project.tracking = server.env()
    output = "".join(result.stdout + result.stderr for result in results)
    assert secret not in output
    assert "View run" in output and f"at: {server.uri}/#/experiments/" in output
    for stage in ("train", "lr-find", "evaluate", "test-holdout"):
        assert f"Running stage '{stage}'" in output
    run = client().get_run(project.json("models/run.json")["run_id"])
    assert run.info.status == "FINISHED"
    assert not [
        text for text in [*run.data.params.values(), *run.data.tags.values()] if secret in text
    ]
    logs = [p for p in (project.root / ".dvc").rglob("*") if p.is_file()]
    assert [p for p in logs if secret.encode() in p.read_bytes()] == []


def test_a_refused_password_fails_before_training_in_one_line(project, server):
    for uri in (with_credentials(server.uri, server.username, "not-the-password"), server.uri):
        project.tracking = {"MLFLOW_TRACKING_URI": uri}  # a wrong password; none at all
        try:
            result = project.run("python", "-m", "stages.train", check=False)
        finally:
            project.tracking = server.env()
        output = result.stdout + result.stderr
        assert result.returncode == 2 and "Traceback" not in output, output
        assert "not-the-password" not in output and "epoch 1/" not in output
        (line,) = [line for line in output.splitlines() if line.startswith("error:")]
        assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in line


def test_a_study_on_the_servers_postgresql_with_the_documented_url(project, server):
    """tune.storage=postgresql://user@host/db as the README gives it (the password from a
    pgpass file), on the PostgreSQL that scripts/tracking_server.sh runs."""
    import optuna

    database = f"optuna_{uuid.uuid4().hex[:8]}"  # a server that CI or a user reuses
    port = (server.dir / "pg_port").read_text().strip()
    bin_dir = sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1]
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    subprocess.run(
        [*as_postgres, str(bin_dir / "psql"), "-h", str(server.dir / "pg"), "-p", port,
         "-U", "postgres", "-v", "ON_ERROR_STOP=1"],
        input=f"CREATE DATABASE {database} OWNER mlflow;", text=True, check=True,
        capture_output=True,
    )  # fmt: skip
    storage = f"postgresql://mlflow@127.0.0.1:{port}/{database}"
    project.tracking = {**server.env(), "PGPASSFILE": str(server.dir / "pgpass")}
    try:
        result = project.run(
            "python", "-m", "stages.tune", f"tune.storage={storage}", "tune.trials=2",
            "tune.study=on-postgresql", check=False,
        )  # fmt: skip
    finally:
        project.tracking = server.env()
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "Traceback" not in output, output
    os.environ["PGPASSFILE"] = str(server.dir / "pgpass")
    try:
        study = optuna.load_study(
            study_name="on-postgresql",
            storage=storage.replace("postgresql://", "postgresql+psycopg2://", 1),
        )
    finally:
        del os.environ["PGPASSFILE"]
    assert [trial.state.name for trial in study.trials] == ["COMPLETE", "COMPLETE"]


def test_an_unreachable_server_fails_training_in_seconds_with_one_line(project, server, client):
    project.tracking = {**server.env(), "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    try:
        started = time.monotonic()
        result = project.run("python", "-m", "stages.train", check=False)
        seconds = time.monotonic() - started
    finally:
        project.tracking = server.env()
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if "error" in line.lower()]
    assert result.returncode == 2 and len(errors) == 1, output
    assert "http://127.0.0.1:9 (MLFLOW_TRACKING_URI) is unreachable" in errors[0]
    assert "epoch 1/" not in output  # before any training
    # The whole command: the interpreter start and imports (~5 s alone; 24 s once under the
    # suite's load) plus the check; without the check, MLflow's retries take minutes.
    assert seconds < 60
    from pipeline.core.errors import StagewiseError
    from pipeline.tracking.store import check_store

    started = time.monotonic()  # the check itself, which the stage runs before training
    with pytest.raises(StagewiseError, match="unreachable"):
        check_store("http://127.0.0.1:9")
    assert time.monotonic() - started < 10


def test_training_outlives_the_server_and_nothing_is_lost(project, crashable_server, monkeypatch):
    """The server crashes mid-training: the training goes on; a buffer that outlives the
    outage writes its metrics when the server is back; the training that ended while it was
    away keeps its model files and checkpoint, and train.resume=true completes its run."""
    from pipeline.core.paths import Paths
    from pipeline.tracking.runs import MetricBuffer, Run
    from pipeline.tracking.store import open_store

    server = crashable_server
    monkeypatch.setattr(project, "tracking", server.env())  # this module's copy, into it
    for key, value in server.env().items():
        monkeypatch.setenv(key, value)
    store = open_store(Paths(project.root))
    experiment = store.experiment_id("outage")
    buffer = MetricBuffer(Run(store, store.client.create_run(experiment).info.run_id), 0.2)
    buffer.log({"valid_loss": 1.0}, 1)
    buffer.flush()

    weights = project.root / "models/model.safetensors"
    before = weights.stat().st_mtime_ns
    # MLflow's own retries would make the end of training wait minutes (its default):
    # MLFLOW_HTTP_REQUEST_MAX_RETRIES is the user's knob for that wait.
    env = {**project.env(), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
    command = ["python", "-m", "stages.train", f"train.epochs={EPOCHS}"]
    training = subprocess.Popen(
        command,
        cwd=project.root,
        env=env,
        stderr=subprocess.STDOUT,
        stdout=subprocess.PIPE,
        text=True,
    )
    lines = []
    for line in training.stdout:
        lines.append(line)
        if "epoch 1/" in line:
            break
    server.crash()
    for step in (2, 3):  # the buffer keeps them, without waiting for the server
        started = time.monotonic()
        time.sleep(0.25)
        buffer.log({"valid_loss": 1.0 / step}, step)
        assert time.monotonic() - started < 3
    assert len(buffer.pending) == 2
    lines += training.stdout.readlines()
    assert training.wait() == 2
    output = "".join(lines)
    assert f"epoch {EPOCHS}/{EPOCHS}" in output  # training went on
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "train.resume=true" in errors[0], output
    assert "Traceback" not in output and server.password not in output
    assert weights.stat().st_mtime_ns > before and (project.root / "checkpoints/train.pt").exists()

    assert server.script("start").returncode == 0
    deadline = time.monotonic() + 60
    while buffer.pending and time.monotonic() < deadline:
        time.sleep(0.2)
        buffer.log({"lr": 0.1}, 4)
    assert buffer.pending == []
    logged = store.client.get_metric_history(buffer.run.id, "epoch/valid_loss")
    assert sorted(m.step for m in logged) == [1, 2, 3]

    resumed = project.run(*command, "train.resume=true")
    run_id = project.json("models/run.json")["run_id"]
    run = store.client.get_run(run_id)
    assert run.info.status == "FINISHED", resumed.stderr
    steps = {m.step for m in store.client.get_metric_history(run_id, "epoch/valid_loss")}
    assert steps == set(range(1, EPOCHS + 1))
