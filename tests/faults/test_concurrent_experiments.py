"""Two `dvc exp run` in one workspace: the second fails on DVC's lock, but only after it has
rewritten params.yaml. The first must then stop with one line saying so, not train on the
second's parameters (nor crash inside DVC with "'NoneType' object is not subscriptable")."""

import json
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from tests.project import ProjectCopy

pytestmark = pytest.mark.e2e

FIRST = ("-S", "train.lr=0.01", "-S", "train.epochs=4", "-S", "model.widths=[8,16]")
SECOND = ("-S", "train.lr=0.02", "-S", "train.epochs=3", "-S", "model.widths=[8,16]")


def start(project: ProjectCopy, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        ["dvc", "exp", "run", *args],
        cwd=project.root,
        env=project.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_a_second_experiment_in_the_workspace_stops_the_first_cleanly(tmp_path):
    project = ProjectCopy.create(tmp_path)
    first = start(project, *FIRST)
    output = []
    for line in first.stdout:  # start the second while the first trains
        output.append(line)
        if line.startswith("Running stage 'train'"):
            break
    second = start(project, *SECOND)
    second_output = second.communicate(timeout=300)[0]
    output += first.communicate(timeout=300)[0]
    output = "".join(output)

    assert second.returncode != 0 and "is busy" in second_output, second_output
    assert first.returncode != 0, output
    assert "another `dvc exp run` in this workspace rewrote" in output, output
    assert "dvc exp run --queue" in output and "NoneType" not in output
    # nothing was trained to the end on the second's parameters, nor recorded as if it was
    status = json.loads(project.run("dvc", "status", "--json").stdout)
    changed = [entry for stage in status.values() for entry in stage]
    modified = [
        e for e in changed if "changed outs" in e and "modified" in e["changed outs"].values()
    ]
    assert not modified, status
    client = MlflowClient(f"sqlite:///{project.root / 'mlruns' / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    finished = {r.data.params.get("train.lr") for r in runs if r.info.status == "FINISHED"}
    assert "0.02" not in finished
