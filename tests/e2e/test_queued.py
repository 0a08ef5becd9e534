"""Queued DVC experiments on the real pipeline: they land in the main MLflow store with the
test split sealed, and the winner applied to the workspace is reproduced."""

import pytest

from tests.project import mlflow_client, ran_stages

pytestmark = pytest.mark.e2e


def test_queued_experiments_land_in_the_main_mlflow_store_with_the_test_split_sealed(project):
    ledger_before = len(project.json("data/holdout_ledger.json"))
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "baseline for queued experiments")
    for lr in ("0.001", "0.01"):
        project.run("dvc", "exp", "run", "--queue", "-S", f"train.lr={lr}", "-S", "train.epochs=1",
                    "-S", "model.widths=[8,16]")  # fmt: skip
    project.run("dvc", "exp", "run", "--run-all")
    client = mlflow_client(project)
    experiment = client.get_experiment_by_name("stagewise")
    queued = client.search_runs([experiment.experiment_id], "tags.`dvc.exp_name` != ''")
    by_lr = {
        r.data.params["train.lr"]: r
        for r in queued
        if r.data.params["train.lr"] in ("0.001", "0.01")
    }
    assert set(by_lr) == {"0.001", "0.01"}
    for run in by_lr.values():
        assert run.info.status == "FINISHED" and "valid_accuracy" in run.data.metrics
        assert "test_accuracy" not in run.data.metrics  # the test split stays sealed
        assert run.data.tags["test_holdout.sealed"] == "true"
        assert (
            run.data.tags["dvc.exp_name"] in project.run("dvc", "exp", "list", "--name-only").stdout
        )
    assert not list((project.root / ".dvc" / "tmp").glob("**/mlruns/mlflow.db"))
    assert len(project.json("data/holdout_ledger.json")) == ledger_before
    shown = project.run("dvc", "exp", "show", "--csv").stdout
    assert "sealed" in shown.splitlines()[0].split(",")  # unambiguous: shown without its file
    # The winner on valid error, applied to the workspace, is reproduced: nothing to rerun.
    best = min(by_lr.values(), key=lambda r: r.data.metrics["valid_error_rate"])
    project.run("dvc", "exp", "apply", best.data.tags["dvc.exp_name"])
    assert "lr: " + best.data.params["train.lr"] in (project.root / "params.yaml").read_text()
    assert ran_stages(project.run("dvc", "repro").stdout) == []
    assert project.json("metrics/valid.json")["error_rate"] == pytest.approx(
        best.data.metrics["valid_error_rate"]
    )
