"""A training killed with SIGKILL cannot end its MLflow run; the next training does: the one
that starts over its checkpoint without resuming it, and any that finds the run's process gone
(tests/faults/test_killed_stages.py kills the real stages)."""

import subprocess
import sys

from mlflow.tracking import MlflowClient

from pipeline.core.paths import PROJECT_ROOT, Paths
from pipeline.tracking.runs import end_abandoned_run, end_orphaned_runs
from pipeline.tracking.store import local_store_uri, open_store
from pipeline.train.checkpoint import save_checkpoint, serialize_checkpoint
from stages import ingest, normalize_stats, split, train
from tests.conftest import compose_config


def test_a_fresh_training_marks_the_abandoned_checkpoints_run_killed(tmp_path):
    paths = Paths(tmp_path)
    cfg = compose_config("train.epochs=1", "model.widths=[8,16]")
    for stage in (ingest, split, normalize_stats):
        stage.run(cfg, paths)
    store = open_store(paths)
    killed = store.client.create_run(store.experiment_id(cfg.tracking.experiment)).info.run_id
    # what a SIGKILLed training leaves: its run RUNNING and a checkpoint naming it
    save_checkpoint(
        paths.checkpoint, serialize_checkpoint({"identity": "an earlier config", "run_id": killed})
    )

    train.run(cfg, paths)

    client = MlflowClient(local_store_uri(paths))
    abandoned = client.get_run(killed)
    assert abandoned.info.status == "KILLED"
    assert "without train.resume" in abandoned.data.tags["killed_reason"]
    assert not paths.checkpoint.exists()


def test_only_a_running_run_of_this_store_is_ended(tmp_path):
    paths = Paths(tmp_path)
    store = open_store(paths)
    experiment = store.experiment_id("unit")
    finished = store.client.create_run(experiment).info.run_id
    store.client.set_terminated(finished, "FINISHED")
    running = store.client.create_run(experiment).info.run_id
    assert not end_abandoned_run(paths, finished, "why")
    assert not end_abandoned_run(paths, "0" * 32, "why")  # a checkpoint from another project
    assert end_abandoned_run(paths, running, "why")
    client = MlflowClient(local_store_uri(paths))
    assert client.get_run(finished).info.status == "FINISHED"
    assert "killed_reason" not in client.get_run(finished).data.tags
    assert client.get_run(running).info.status == "KILLED"


HOLD_A_RUN = """
import sys, time
from pathlib import Path
from pipeline.core.paths import Paths
from pipeline.tracking.runs import training_run
with training_run(Paths(Path(sys.argv[1])), {"tracking": {"experiment": "unit"}}, {}) as run:
    print(run.id, flush=True)
    time.sleep(600)
"""


def test_a_run_whose_process_died_is_ended_unless_it_is_being_resumed(tmp_path):
    paths = Paths(tmp_path)
    open_store(paths)  # created once, before the processes that share it
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_RUN, str(tmp_path)],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    run_id = holder.stdout.readline().strip()
    client = MlflowClient(local_store_uri(paths))

    end_orphaned_runs(paths)
    assert client.get_run(run_id).info.status == "RUNNING"  # its process holds it
    holder.kill()
    holder.wait(timeout=30)
    end_orphaned_runs(paths, keep=run_id)  # what a training that resumes it does
    assert client.get_run(run_id).info.status == "RUNNING"
    end_orphaned_runs(paths)  # what any other training does
    killed = client.get_run(run_id)
    assert killed.info.status == "KILLED"
    assert "process was killed" in killed.data.tags["killed_reason"]
    assert list((paths.mlruns / "open").iterdir()) == []
