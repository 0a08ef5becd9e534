"""The SLURM recipes on a real one-node SLURM cluster (scripts/slurm.sh): a Hydra sweep of
SLURM jobs (submitit), the srun + torchrun recipe (scripts/slurm_train.sbatch), and scancel.

Without a cluster these tests skip, or fail when STAGEWISE_REQUIRE_SLURM=1 (CI sets it)."""

import os
import subprocess
import time
from pathlib import Path

import pytest

from pipeline.core.paths import PROJECT_ROOT, ModelFiles, Paths
from pipeline.model.inference import Classifier
from tests.project import ProjectCopy, copy_of_template, mlflow_client

pytestmark = pytest.mark.e2e

# One CPU and little memory per job, so that the two jobs of a sweep run at once on a
# 2-core machine (the preset asks for a GPU and 32 GB).
LAUNCHER = (
    "hydra/launcher=slurm", "hydra.launcher.partition=debug", "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10",
)  # fmt: skip


@pytest.fixture(scope="module")
def cluster():
    """The one-node cluster of scripts/slurm.sh (started if it is not running), and its
    SLURM_CONF in the environment of every command the tests run."""
    started = subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts" / "slurm.sh"), "start"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if started.returncode != 0:
        reason = f"no SLURM cluster: {started.stderr.strip() or started.stdout.strip()}"
        if os.environ.get("STAGEWISE_REQUIRE_SLURM") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    slurm_dir = os.environ.get("STAGEWISE_SLURM_DIR", "/tmp/stagewise-slurm")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", f"{slurm_dir}/slurm.conf")
        yield


@pytest.fixture(scope="module")
def project(cluster, tmp_path_factory) -> ProjectCopy:
    return copy_of_template(tmp_path_factory, "slurm")


def runs(project: ProjectCopy, query: str = ""):
    client = mlflow_client(project)
    experiment = client.get_experiment_by_name("stagewise").experiment_id
    return client.search_runs([experiment], query)


def sweep_children(project: ProjectCopy, swept: str):
    """The parent run of the sweep whose overrides end with `swept`, and its children."""
    (parent,) = runs(project, f"tags.`sweep.overrides` LIKE '%{swept}'")
    return parent, runs(project, f"tags.mlflow.parentRunId = '{parent.info.run_id}'")


def test_a_sweep_of_two_slurm_jobs_is_one_parent_with_two_finished_children(project):
    started = time.time()
    project.run("python", "-m", "stages.train", "-m", *LAUNCHER, "train.lr=0.001,0.002")
    returned = time.time() - started
    parent, children = sweep_children(project, "train.lr=0.001,0.002")
    finished = max(c.info.end_time for c in children) / 1000 - started
    print(f"\n2-job SLURM sweep: both runs FINISHED {finished:.1f} s after the command started, "
          f"which returned after {returned:.1f} s")  # fmt: skip
    assert parent.info.status == "FINISHED" and parent.data.metrics["jobs"] == 2
    assert sorted(c.data.params["train.lr"] for c in children) == ["0.001", "0.002"]
    assert {c.info.status for c in children} == {"FINISHED"}
    # Each job's log is in submitit's folder of the sweep, named by its SLURM job id (README).
    for child in children:
        job = child.data.tags["slurm.job_id"]
        (log,) = project.root.glob(f"multirun/*/*/.submitit/{job}/{job}_0_log.out")
        assert f"MLflow run {child.info.run_id}" in log.read_text()
    array = job.split("_")[0]
    script = project.root.glob(f"multirun/*/*/.submitit/{array}/{array}_submission.sh")
    assert "#SBATCH --job-name=stagewise\n" in next(script).read_text()  # what squeue shows


def test_the_srun_torchrun_recipe_trains_one_model_over_two_tasks(project):
    before = {r.info.run_id for r in runs(project)}
    # Two SLURM tasks on the one node, each a torchrun "node" of one gloo process.
    submitted = project.run(
        "sbatch", "--parsable", "--nodes=1", "--ntasks-per-node=2", "--cpus-per-task=1",
        "scripts/slurm_train.sbatch", "train.batch_size=64",
    )  # fmt: skip
    job = submitted.stdout.strip()
    # Not `sbatch --wait`: it polls with growing intervals, up to ~15 s after the job's end.
    deadline = time.monotonic() + 120
    while project.run("squeue", "-h", "-j", job, check=False).stdout.strip():
        assert time.monotonic() < deadline, f"job {job} still queued or running"
        time.sleep(0.5)
    log = (project.root / f"slurm-stagewise-train-{job}.out").read_text()
    (run,) = [r for r in runs(project) if r.info.run_id not in before]  # one, not one per rank
    assert run.info.status == "FINISHED", log
    assert run.data.tags["train.processes"] == "2" and run.data.tags["slurm.job_id"] == job
    assert project.json("models/run.json")["run_id"] == run.info.run_id
    assert Classifier.load(ModelFiles(Paths(project.root).model_dir)).spec.classes == [
        str(d) for d in range(10)
    ]


def wait_for(condition, what: str, process: subprocess.Popen, timeout_s: float = 90):
    deadline = time.monotonic() + timeout_s
    while not (found := condition()):
        assert time.monotonic() < deadline and process.poll() is None, f"no {what}"
        time.sleep(0.25)
    return found


def test_a_job_cancelled_with_scancel_ends_its_run_killed(project):
    client = mlflow_client(project)
    sweep = subprocess.Popen(
        ["python", "-m", "stages.train", "-m", *LAUNCHER, "train.epochs=500"],
        cwd=project.root, env=project.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:

        def training() -> list:
            found = runs(project, "attributes.status = 'RUNNING' and params.`train.epochs` = '500'")
            return [r for r in found if "mlflow.parentRunId" in r.data.tags and r.data.metrics]

        (run,) = wait_for(training, "job training with an epoch logged", sweep)
        cancelled = time.monotonic()
        subprocess.run(["scancel", run.data.tags["slurm.job_id"]], check=True)
        status = lambda: client.get_run(run.info.run_id).info.status  # noqa: E731
        wait_for(lambda: status() != "RUNNING", "end of the run", sweep, timeout_s=60)
        print(f"\nscancel -> run {status()} in {time.monotonic() - cancelled:.1f} s")
        assert status() == "KILLED"
    finally:
        # Without an accounting database submitit cannot see that the job ended, so the sweep
        # would wait for it: end it as a user would (its parent run then ends KILLED).
        sweep.terminate()
        sweep.wait(timeout=60)
    assert runs(project, "attributes.status = 'RUNNING'") == []


def test_the_cluster_script_is_idempotent(cluster):
    again = subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts" / "slurm.sh"), "start"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "already running" in again.stdout
    assert Path(os.environ["SLURM_CONF"]).is_file()
