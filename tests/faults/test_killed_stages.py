"""Every stage killed at a random point, as a user's `kill` or a closed terminal does (the whole
process group: DVC and the stage it runs): the next `dvc repro` completes, every output is
valid, and no MLflow run is left RUNNING.

The kill points are seeded (STAGEWISE_FAULT_SEED, printed in every assertion message): each
stage is killed after a random fraction of its run time, and a kill that lands after the
stage finished is retried at that fraction of the time it really took, so every stage is
really interrupted, on a fast machine as on a slow one."""

import json
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from tests.project import ALL_STAGES, ProjectCopy, copy_of_template, mlflow_client

pytestmark = pytest.mark.e2e

SEED = int(os.environ.get("STAGEWISE_FAULT_SEED", "9"))
# Seconds from DVC's "Running stage" line to its exit, measured on 2 busy cores; a kill lands
# at a random fraction of this, and a retry at that fraction of the time really taken.
RUN_TIME_S = {
    "ingest": 2.7, "split": 1.4, "normalize-stats": 1.3, "lr-find": 11.2, "evaluate": 8.9,
    "test-holdout": 7.0,
}  # fmt: skip
# train is killed with SIGKILL within its second epoch (0.1 s measured), its MLflow run open,
# with or without a checkpoint on disk (whether the kill lands before the first write is a
# matter of timing): nothing in the killed process can end the run, so the next training must.
TRAIN_EPOCH_S = 0.1
SIGNALS = (signal.SIGKILL, signal.SIGTERM)


@dataclass
class Kill:
    stage: str
    signal: signal.Signals
    fraction: float
    delay_s: float = 0.0
    tries: int = 0
    output: str = ""
    left_running: int = 0  # MLflow runs RUNNING right after the kill
    left_checkpoint: bool = False

    def __str__(self) -> str:
        return (
            f"{self.stage}: {self.signal.name} after {self.delay_s:.2f}s ({self.tries} tries, "
            f"{self.left_running} run(s) left RUNNING, checkpoint left: {self.left_checkpoint})"
        )


def kill_once(project: ProjectCopy, kill: Kill) -> float | None:
    """Run the stage alone and signal the whole process group kill.delay_s after DVC started
    it (train: after its first epoch); None if it was still running then, else the seconds it
    took."""
    repro = subprocess.Popen(
        ["dvc", "repro", "--force", "--single-item", kill.stage],
        cwd=project.root,
        env=project.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's job
    )
    start = "epoch 1/" if kill.stage == "train" else "Running stage"
    lines = []
    for line in repro.stdout:
        lines.append(line)
        if line.startswith(start):
            break
    started = time.monotonic()
    try:
        repro.wait(timeout=kill.delay_s)
        took = time.monotonic() - started
    except subprocess.TimeoutExpired:
        os.killpg(repro.pid, kill.signal)
        took = None
    kill.output = "".join(lines) + repro.communicate(timeout=60)[0]
    kill.left_running = len(running_runs(project))
    kill.left_checkpoint = (project.root / "checkpoints/train.pt").exists()
    return took


def kill_stage(project: ProjectCopy, kill: Kill) -> Kill:
    if kill.stage == "train":
        kill.signal, kill.delay_s = signal.SIGKILL, kill.fraction * TRAIN_EPOCH_S
    else:
        kill.delay_s = kill.fraction * RUN_TIME_S[kill.stage]
    for kill.tries in range(1, 5):
        took = kill_once(project, kill)
        if kill.stage == "train" and not kill.left_running:
            took = kill.delay_s  # its run had ended: kill sooner
        if took is None:
            return kill
        kill.delay_s = kill.fraction * took  # finished first: this machine is faster
    raise AssertionError(f"seed {SEED}: never interrupted {kill}\n{kill.output}")


def test_every_stage_killed_at_a_random_point_recovers_on_the_next_repro(tmp_path_factory):
    project = copy_of_template(tmp_path_factory, "killed-stages")
    rng = random.Random(SEED)
    # Downstream first: every killed stage's inputs are still there for the next one to read.
    kills = [
        kill_stage(project, Kill(stage, rng.choice(SIGNALS), rng.uniform(0.1, 0.8)))
        for stage in reversed(ALL_STAGES)
    ]
    context = f"seed {SEED}; kills: {'; '.join(map(str, kills))}"
    print(context)

    repro = project.run("dvc", "repro", check=False)
    assert repro.returncode == 0, f"{context}\n{repro.stdout}\n{repro.stderr}"
    status = project.run("dvc", "status")
    assert "Data and pipelines are up to date." in status.stdout, f"{context}\n{status.stdout}"
    assert_outputs_valid(project, context)
    running = running_runs(project)
    assert running == [], f"{context}; left RUNNING: {[r.info.run_name for r in running]}"
    leftovers = [p for p in project.root.rglob(".*.tmp") if ".dvc" not in p.parts]
    assert leftovers == [], context


def running_runs(project: ProjectCopy) -> list:
    client = mlflow_client(project)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments, "attributes.status = 'RUNNING'")


def assert_outputs_valid(project: ProjectCopy, context: str) -> None:
    """Each output parses as what its readers expect, and the model predicts."""
    from pipeline.core.paths import ModelFiles, Paths
    from pipeline.model.inference import Classifier

    root = project.root
    for name in ("train", "valid", "test", "lr_find"):
        assert json.loads((root / f"metrics/{name}.json").read_text()), context
    for name in ("ingested/report.json", "split/report.json", "stats/normalize.json"):
        json.loads((root / "data" / name).read_text())
    manifest = pd.read_parquet(root / "data/ingested/manifest.parquet")
    images = np.load(root / "data/ingested/images.npy", mmap_mode="r")
    assert len(manifest) == len(images) == len(pd.read_parquet(root / "data/split/split.parquet"))
    for table in ("train/history.csv", "lr_find/curve.csv", "valid/confusion.csv"):
        assert len(pd.read_csv(root / "plots" / table)), context
    classifier = Classifier.load(ModelFiles(Paths(root).model_dir))
    assert classifier is not None, context
