"""The disk fills up while training writes a checkpoint: the previous checkpoint stays whole,
the stage stops with one line naming the file, no temporary file is left behind, and the
MLflow run ends FAILED."""

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch

from tests.project import copy_of_template, mlflow_client

pytestmark = pytest.mark.e2e


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 2 MiB tmpfs: a real filesystem that a test can fill. Mounting it needs root (or
    CAP_SYS_ADMIN); without, the test is skipped rather than faking ENOSPC."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    ) if shutil.which("mount") else None  # fmt: skip
    if not mounted or mounted.returncode != 0:
        reason = mounted.stderr.strip() if mounted else "no mount command"
        pytest.skip(f"cannot mount a small tmpfs to fill ({reason}): needs root")
    yield mount
    subprocess.run(["umount", "--lazy", str(mount)], check=True)


def fill(disk: Path) -> int:
    """Write a file until the disk is full; the bytes written."""
    written = 0
    with open(disk / "filler", "wb", buffering=0) as f:
        try:
            while True:
                written += f.write(b"\0" * 4096)
        except OSError:
            return written


def test_a_full_disk_during_a_checkpoint_write_keeps_the_previous_one(tmp_path_factory, small_disk):
    project = copy_of_template(tmp_path_factory, "full-disk")
    shutil.rmtree(project.root / "checkpoints", ignore_errors=True)  # empty since training ended
    (project.root / "checkpoints").symlink_to(small_disk, target_is_directory=True)
    checkpoint = small_disk / "train.pt"
    model_before = (project.root / "models/model.safetensors").read_bytes()
    started = time.monotonic()
    training = subprocess.Popen(
        ["python", "-m", "stages.train", "train.epochs=200", "train.checkpoint_every_s=0"],
        cwd=project.root,
        env=project.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    while not checkpoint.exists():  # the first epoch's checkpoint: then the disk fills up
        assert training.poll() is None, training.communicate()[0]
        time.sleep(0.01)
    checkpoint_bytes, filled = checkpoint.stat().st_size, fill(small_disk)
    output = training.communicate(timeout=120)[0]
    failed_after_s = time.monotonic() - started
    lines = output.strip().splitlines()
    context = (
        f"checkpoint {checkpoint_bytes} B, disk filled with {filled} B; exit "
        f"{training.returncode} after {failed_after_s:.1f}s, {len(lines)} lines:\n{output}"
    )

    assert training.returncode == 2, context
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in output, context
    assert (
        str(project.root / "checkpoints/train.pt") in errors[0] and "no space left" in errors[0]
    ), context
    epochs = [line for line in lines if line.startswith("epoch ")]
    kept = torch.load(checkpoint, map_location="cpu", weights_only=True)
    # each epoch's line is printed before its checkpoint is written, and the failed write stops
    # training: the one on disk is the epoch before the last one printed
    assert kept["epoch"] == len(epochs) - 1 >= 1, context
    assert len(kept["history"]) == kept["epoch"], context
    assert sorted(os.listdir(small_disk)) == ["filler", "train.pt"], context
    assert (project.root / "models/model.safetensors").read_bytes() == model_before
    client = mlflow_client(project)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("stagewise").experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    assert run.info.status == "FAILED" and run.data.params["train.epochs"] == "200", context
    assert "no space left" in run.data.tags["error"], context
    print(context)
