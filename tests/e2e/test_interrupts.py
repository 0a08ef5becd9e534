"""Sweeps and interruptions of the real pipeline: Hydra multirun as MLflow parent and
children, Ctrl-C and SIGTERM leave no run RUNNING, a killed training resumes identically."""

import subprocess

import pandas as pd
import pytest

from tests.project import (
    mlflow_client,
    ran_stages,
)

pytestmark = pytest.mark.e2e


def test_stage_multirun_is_a_parent_run_with_a_child_per_job(project):
    before = (project.root / "models/model.safetensors").read_bytes()
    client = mlflow_client(project)
    experiment = client.get_experiment_by_name("stagewise")
    sweep = project.run(
        "python",
        "-m",
        "stages.train",
        "-m",
        "train.lr=0.001,-1,0.003",
        "train.epochs=1",
        check=False,
    )
    assert sweep.returncode == 2  # one job failed; the others still ran
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`sweep.overrides` != ''")
    children = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    by_lr = {r.data.params["train.lr"]: r for r in children}
    assert set(by_lr) == {"0.001", "-1.0", "0.003"}
    assert (
        by_lr["-1.0"].info.status == "FAILED"
        and "must be positive" in by_lr["-1.0"].data.tags["error"]
    )
    assert by_lr["0.001"].info.status == by_lr["0.003"].info.status == "FINISHED"
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["jobs"] == 3 and parent.data.metrics["failed_jobs"] == 1
    best = min((by_lr["0.001"], by_lr["0.003"]), key=lambda r: r.data.metrics["valid_error_rate"])
    assert parent.data.tags["sweep.best_run_id"] == best.info.run_id
    project.run("python", "-m", "stages.compare", f"compare.sweep={parent.info.run_id}")
    table = pd.read_csv(project.root / "comparison" / f"{parent.info.run_id}.csv")
    assert list(table.columns) == [
        "run_id",
        "status",
        "valid_error_rate",
        "train.lr",
    ]  # only what differs
    assert table["run_id"].iloc[0] == best.info.run_id and table["status"].iloc[-1] == "FAILED"
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "comparison")}
    assert {f"comparison/{parent.info.run_id}.{ext}" for ext in ("csv", "md", "png")} == logged
    assert (project.root / "models/model.safetensors").read_bytes() == before
    assert len(list((project.root / "multirun").glob("*/*/*/models/model.safetensors"))) == 2
    assert ran_stages(project.run("dvc", "repro").stdout) == []


def test_ctrl_c_during_a_sweep_leaves_no_run_running(project):
    import signal
    import time

    client = mlflow_client(project)
    experiment = client.get_experiment_by_name("stagewise")
    sweep = subprocess.Popen(
        ["python", "-m", "stages.train", "-m", "train.lr=0.001,0.002", "train.epochs=500"],
        cwd=project.root, env=project.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not client.search_runs(
        [experiment.experiment_id],
        "attributes.status = 'RUNNING' and tags.mlflow.parentRunId != ''",
    ):
        assert time.monotonic() < deadline and sweep.poll() is None
        time.sleep(0.5)
    sweep.send_signal(signal.SIGINT)
    assert sweep.wait(timeout=60) != 0
    assert client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'") == []
    killed = client.search_runs([experiment.experiment_id], "attributes.status = 'KILLED'")
    assert len(killed) == 2  # the job's run and the sweep's parent


def test_sigterm_during_training_marks_the_run_killed_and_keeps_the_model(project):
    import time

    before = (project.root / "models/model.safetensors").read_bytes()
    client = mlflow_client(project)
    experiment = client.get_experiment_by_name("stagewise")
    training = subprocess.Popen(["python", "-m", "stages.train", "train.epochs=500"], cwd=project.root,
                                env=project.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'"):
        assert time.monotonic() < deadline and training.poll() is None
        time.sleep(0.5)
    training.terminate()
    assert training.wait(timeout=60) == 143
    assert client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'") == []
    (latest,) = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )
    assert latest.info.status == "KILLED" and latest.data.params["train.epochs"] == "500"
    assert (project.root / "models/model.safetensors").read_bytes() == before


def test_a_killed_training_resumes_in_its_mlflow_run_with_identical_weights(project):
    import signal
    import time

    import torch

    # A checkpoint on disk after each epoch for the SIGKILL to find (a SIGKILL skips the write
    # on interruption). The uninterrupted run keeps the default interval: the interval changes
    # neither the weights nor the checkpoint's identity.
    command = ["python", "-m", "stages.train", "train.epochs=6", "model.widths=[8,16]"]
    project.run(*command)
    command.append("train.checkpoint_every_s=0")
    uninterrupted = (project.root / "models/model.safetensors").read_bytes()
    checkpoint = project.root / "checkpoints/train.pt"
    assert not checkpoint.exists()  # removed once training finished
    training = subprocess.Popen(command, cwd=project.root, env=project.env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (checkpoint.exists() and torch.load(checkpoint, weights_only=True)["epoch"] >= 2):
        assert time.monotonic() < deadline and training.poll() is None
        time.sleep(0.05)
    training.send_signal(signal.SIGKILL)  # no chance to clean up: the checkpoint must do
    training.wait(timeout=30)
    killed_at = torch.load(checkpoint, weights_only=True)
    assert 2 <= killed_at["epoch"] < 6
    resumed = project.run(*command, "train.resume=true")
    assert f"resuming after epoch {killed_at['epoch']} of 6" in resumed.stdout + resumed.stderr
    assert (project.root / "models/model.safetensors").read_bytes() == uninterrupted
    run_id = project.json("models/run.json")["run_id"]
    assert run_id == killed_at["run_id"]
    client = mlflow_client(project)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["resumed"] == "true"
    steps = {m.step for m in client.get_metric_history(run_id, "epoch/valid_loss")}
    assert steps == set(range(1, 7))
    assert not checkpoint.exists()
