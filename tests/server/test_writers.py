"""Many writers on one tracking server (tests/server/conftest.py): 8 trainings started at once
from 8 clones, as 8 teammates would, and an 8-job parallel sweep. A request the server drops
or lets time out shows as a failed process, a run not FINISHED or a missing epoch."""

import shutil
import subprocess
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest

from pipeline.core.paths import Paths
from pipeline.tasks.kinds import SINGLE_LABEL
from pipeline.tracking.runs import Run, curve_name
from pipeline.tracking.store import reconnect
from tests.project import TINY
from tests.server.test_server import ServerProject

pytestmark = pytest.mark.e2e

WRITERS = 8
EPOCHS = 2  # TINY's
CURVES = {curve_name(m) for m in (*SINGLE_LABEL.monitors, "lr", "epoch_seconds")}


@pytest.fixture(scope="module")
def experiment() -> str:
    """This module's experiment: a server that CI or a user reuses has other runs."""
    return f"writers-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, server) -> ServerProject:
    """A clone whose data stages ran (they track nothing): what each writer trains on."""
    copy = ServerProject.create(tmp_path_factory.mktemp("writers") / "project")
    copy.tracking = server.env()
    copy.compose(*TINY)
    copy.run("dvc", "repro", "normalize-stats")
    return copy


@pytest.fixture
def client(monkeypatch, server):
    from mlflow.tracking import MlflowClient

    for name, value in server.env().items():
        monkeypatch.setenv(name, value)
    return MlflowClient(server.uri)


def start(project: ServerProject, *command: str) -> subprocess.Popen:
    return subprocess.Popen(
        command,
        cwd=project.root,
        env=project.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(processes: list[subprocess.Popen]) -> None:
    outputs = [process.communicate(timeout=600)[0] for process in processes]
    failed = [
        out for process, out in zip(processes, outputs, strict=True) if process.returncode != 0
    ]
    assert not failed, failed[0]


def assert_complete(client, runs) -> None:
    """Every run FINISHED, with every per-epoch curve at every epoch."""
    for run in runs:
        assert run.info.status == "FINISHED", run.info
        assert {m for m in run.data.metrics if m.startswith(curve_name(""))} == CURVES
        for curve in CURVES:
            steps = [m.step for m in client.get_metric_history(run.info.run_id, curve)]
            assert sorted(steps) == list(range(1, EPOCHS + 1)), (run.info.run_id, curve)


def test_eight_trainings_started_at_once_all_finish_with_every_epoch(
    prepared, experiment, client, tmp_path
):
    clones = []
    for writer in range(WRITERS):
        root = tmp_path / f"clone{writer}"
        shutil.copytree(prepared.root, root, symlinks=True)
        clones.append(ServerProject(root, tracking=prepared.tracking))
    trainings = [
        start(
            clone,
            "python",
            "-m",
            "stages.train",
            f"seed={seed}",
            f"tracking.experiment={experiment}",
        )
        for seed, clone in enumerate(clones)
    ]
    finish(trainings)

    runs = client.search_runs(
        [client.get_experiment_by_name(experiment).experiment_id], "tags.stage = 'train'"
    )
    assert sorted(r.info.run_id for r in runs) == sorted(
        clone.json("models/run.json")["run_id"] for clone in clones
    )
    assert sorted(r.data.params["seed"] for r in runs) == [str(s) for s in range(WRITERS)]
    assert_complete(client, runs)


def test_runs_logging_the_same_split_at_the_same_moment_all_record_it(
    prepared, experiment, client, server
):
    """MLflow looks a dataset up, then inserts it: runs that log the same split at the same
    moment race on its unique key (a CI run lost one of the eight trainings above to it)."""
    store = reconnect(server.uri, None)
    experiment_id = store.experiment_id(experiment)
    runs = [Run(store, client.create_run(experiment_id).info.run_id) for _ in range(WRITERS)]
    together = threading.Barrier(WRITERS)

    def log(run: Run) -> None:
        together.wait()
        run.log_split_inputs(Paths(prepared.root), {"train": "training", "valid": "validation"})

    with ThreadPoolExecutor(WRITERS) as pool:
        list(pool.map(log, runs))
    for run in runs:
        inputs = client.get_run(run.id).inputs.dataset_inputs
        assert sorted(i.dataset.name for i in inputs) == ["train", "valid"], run.id


def test_an_eight_job_parallel_sweep_finishes_every_job(prepared, experiment, client):
    seeds = ",".join(str(s) for s in range(WRITERS))
    sweep = start(
        prepared, "python", "-m", "stages.train", "-m", "hydra/launcher=parallel",
        f"hydra.launcher.n_jobs={WRITERS}", f"seed={seeds}", f"tracking.experiment={experiment}",
        "sweep.reuse=false",  # every job writes: none reuses the eight trainings above
    )  # fmt: skip
    finish([sweep])

    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    (parent,) = client.search_runs([experiment_id], f"tags.`sweep.overrides` LIKE '%seed={seeds}%'")
    children = client.search_runs(
        [experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["jobs"] == WRITERS and parent.data.metrics["failed_jobs"] == 0
    assert sorted(c.data.params["seed"] for c in children) == [str(s) for s in range(WRITERS)]
    assert_complete(client, children)
