"""A file-size limit hit while training writes a checkpoint, and an array store cut short:
the stage stops with one line naming the file and what to do, never a traceback."""

import os
import resource
import signal
import subprocess

import pytest
import torch

from tests.project import ProjectCopy

pytestmark = pytest.mark.e2e


def one_error_line(result: subprocess.CompletedProcess) -> str:
    output = result.stdout + result.stderr
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in output, output
    return errors[0]


def test_a_file_size_limit_during_a_checkpoint_write_keeps_the_previous_one(project: ProjectCopy):
    """RLIMIT_FSIZE (ulimit -f) below the checkpoint's size but above the MLflow database's
    (the run writes there first): the write fails with EFBIG (SIGXFSZ ignored, as a batch
    scheduler's limit or `trap '' XFSZ` has it; by default the signal kills the process)."""
    checkpoint = project.root / "checkpoints/train.pt"
    checkpoint.parent.mkdir(exist_ok=True)
    torch.save({"run_id": None, "epoch": 1}, checkpoint)  # an earlier one, discarded on success
    before = checkpoint.read_bytes()
    limit = (project.root / "mlruns/mlflow.db").stat().st_size + (1 << 20)

    def limited() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    # widths 64, 128: a 3 MB checkpoint (weights and Adam's two moments), above the limit
    result = subprocess.run(
        ["python", "-m", "stages.train", "model.widths=[64,128]", "train.epochs=1",
         "train.checkpoint_every_s=0"],
        cwd=project.root, env=project.env(), capture_output=True, text=True, preexec_fn=limited,
    )  # fmt: skip
    error = one_error_line(result)
    assert f"to write {checkpoint}" in error and "file-size limit" in error, error
    assert checkpoint.read_bytes() == before
    assert os.listdir(checkpoint.parent) == ["train.pt"]  # no temporary file left


def test_a_truncated_store_stops_streamed_training_with_the_command_to_rerun(project):
    store = project.root / "data/ingested/images.npy"
    whole = store.read_bytes()
    try:
        store.write_bytes(whole[: len(whole) // 2])
        result = project.run(
            "python", "-m", "stages.train", "train.data_loading=stream", check=False
        )
    finally:
        store.write_bytes(whole)
    error = one_error_line(result)
    assert error == (
        f"error: {store} is truncated or corrupt (mmap length is greater than file size); "
        "rerun ingest: dvc repro -f ingest"
    )
