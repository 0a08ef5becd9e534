"""Sweeps with the conf/hydra presets: parallel jobs (joblib) against one MLflow store, on the
real digits data in a temporary copy of the project (Optuna searches: test_tune.py)."""

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
    """The parent run of the sweep with these overrides, and its children."""
    client, experiment = store(project)
    (parent,) = client.search_runs([experiment], f"tags.`sweep.overrides` = '{overrides}'")
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return parent, children


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
