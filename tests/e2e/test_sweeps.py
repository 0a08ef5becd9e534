"""Sweeps with the conf/hydra presets: parallel jobs (joblib) against one MLflow store, and a
killed sweep rerun, on the real digits data in a temporary copy of the project (Optuna
searches: test_tune.py)."""

import signal
import subprocess
import sys
import time

import pytest

from tests.project import ProjectCopy, copy_of_template

pytestmark = pytest.mark.e2e

TINY = ("model.widths=[8,16]", "train.epochs=3")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> ProjectCopy:
    """A copy of the session's pipeline run (its data stages are what sweeps reuse)."""
    copy = copy_of_template(tmp_path_factory, "sweeps")
    copy.compose(*TINY)
    return copy


def store(project: ProjectCopy):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{project.root / 'mlruns' / 'mlflow.db'}")
    return client, client.get_experiment_by_name("stagewise").experiment_id


def sweep_runs(project: ProjectCopy, overrides: str):
    """The parent run of the latest sweep with these overrides (None before it starts), and
    its children."""
    client, experiment = store(project)
    query = f"tags.`sweep.overrides` = '{overrides}'"
    latest = client.search_runs([experiment], query, order_by=["start_time DESC"], max_results=1)
    if not latest:
        return None, []
    children = client.search_runs(
        [experiment], f"tags.mlflow.parentRunId = '{latest[0].info.run_id}'"
    )
    return latest[0], children


def test_four_parallel_jobs_lose_no_run_or_metric(project):
    lrs = "train.lr=0.001,0.002,0.004,0.008"
    project.run("python", "-m", "stages.train", "-m", "hydra/launcher=parallel", lrs)
    parent, children = sweep_runs(project, f"hydra/launcher=parallel {lrs}")
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs"] == 4
    assert sorted(c.data.params["train.lr"] for c in children) == [
        "0.001",
        "0.002",
        "0.004",
        "0.008",
    ]
    client, _ = store(project)
    for child in children:
        assert child.info.status == "FINISHED"
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "epoch/valid_loss")]
        assert sorted(steps) == [1, 2, 3]
    assert parent.data.tags["sweep.best_run_id"] in {c.info.run_id for c in children}


def test_a_killed_sweep_rerun_trains_only_the_jobs_it_had_not_finished(project):
    """The first two jobs finish, the third is killed (SIGKILL) while it trains; the same
    command again reuses the first two runs and trains the third."""
    overrides = "train.epochs=1,3,10"  # not the template's 2: no run to reuse at first
    command = [sys.executable, "-m", "stages.train", "-m", overrides]
    sweep = subprocess.Popen(command, cwd=project.root, env=project.env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline, finished = time.monotonic() + 120, []
    while len(finished) < 2:
        assert time.monotonic() < deadline and sweep.poll() is None, "it ended before the kill"
        time.sleep(0.1)
        finished = [c for c in sweep_runs(project, overrides)[1] if c.info.status == "FINISHED"]
    sweep.send_signal(signal.SIGKILL)
    sweep.wait()
    first = {c.data.params["train.epochs"]: c for c in finished}
    assert sorted(first) == ["1", "3"] and not any("reused_from" in c.data.tags for c in finished)

    rerun = project.run(*command)
    parent, children = sweep_runs(project, overrides)
    again = {c.data.params["train.epochs"]: c for c in children}
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs"] == 3
    assert sorted(again) == ["1", "10", "3"]
    for epochs, earlier in first.items():
        reused = again[epochs]
        assert reused.info.status == "FINISHED"
        assert reused.data.tags["reused_from"] == earlier.info.run_id
        assert reused.data.tags["job.key"] == earlier.data.tags["job.key"]
        assert reused.data.metrics == {
            name: value for name, value in earlier.data.metrics.items() if "/" not in name
        }  # its final numbers, and no epoch curves: it did not train
        assert f"reusing finished run {earlier.info.run_id}" in rerun.stdout + rerun.stderr
    trained = again["10"]
    assert "reused_from" not in trained.data.tags
    client, _ = store(project)
    steps = [m.step for m in client.get_metric_history(trained.info.run_id, "epoch/valid_loss")]
    assert sorted(steps) == list(range(1, 11))
    best = min(again.values(), key=lambda c: c.data.metrics["valid_error_rate"])
    assert parent.data.tags["sweep.best_run_id"] == best.info.run_id
