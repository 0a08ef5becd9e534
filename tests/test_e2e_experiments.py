"""DVC experiments on the real pipeline: `dvc exp run` reruns only what its params affect,
queued experiments land in the main MLflow store with the test split sealed."""

import pytest

from tests.project import (
    ProjectCopy,
    copy_of_template,
    mlflow_client,
    ran_stages,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> ProjectCopy:
    """This module's own copy of the session's pipeline run: its tests change the workspace."""
    return copy_of_template(tmp_path_factory, "experiments")


def exp_run(project: ProjectCopy, *params: str) -> list[str]:
    """`dvc exp run -S p ...`; the stages it ran."""
    command = ["dvc", "exp", "run"]
    for param in params:
        command += ["-S", param]
    return ran_stages(project.run(*command).stdout)


def test_experiments_rerun_only_what_their_params_affect(project):
    tiny_model = "model.widths=[8,16]"
    # epochs=3: a configuration no earlier test has run, so nothing comes from DVC's cache
    assert exp_run(project, "train.epochs=3", tiny_model) == ["train", "evaluate", "test-holdout"]
    assert exp_run(project, "split.seed=7", "train.epochs=3", tiny_model) == [
        "split", "normalize-stats", "train", "lr-find", "evaluate", "test-holdout",
    ]  # fmt: skip
    assert exp_run(project, "split.seed=7", "train.epochs=1", "model=resnet18") == [
        "train", "lr-find", "evaluate", "test-holdout",
    ]  # fmt: skip
    assert project.json("models/model.json")["arch"] == "resnet18"
    header = project.run("dvc", "exp", "show", "--csv").stdout.splitlines()[0].split(",")
    assert {"metrics/test.json:accuracy", "metrics/valid.json:f1_macro", "train.epochs"} <= set(
        header
    )


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
