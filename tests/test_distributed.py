"""train.devices=N: DistributedDataParallel over N gloo processes on the CPU, started by
PyTorch's elastic launcher (or torchrun); rank 0 alone writes files and the MLflow run."""

import csv
import math
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

from pipeline.core.config import TrainConfig
from pipeline.core.errors import StagewiseError
from pipeline.core.io import read_json
from pipeline.core.paths import ModelFiles, Paths
from pipeline.model.device import Batches, prepare_model
from pipeline.model.inference import Classifier
from pipeline.model.networks import small_cnn
from pipeline.model.preprocess import Normalizer
from pipeline.model.streaming import StoreRows, StreamedBatches
from pipeline.tracking.store import open_store
from pipeline.train.distributed import (
    agree,
    check_processes,
    mean_over_ranks,
    rank,
    requested_processes,
    run_distributed,
    shard_rows,
    world_size,
    wrap,
)
from pipeline.train.loop import FitState, train_one_epoch
from stages import train
from tests.conftest import compose_config
from tests.project import ProjectCopy

CPU = torch.device("cpu")
TINY = ("model.widths=[8,16]", "train.epochs=2", "train.batch_size=64")
# Largest per-epoch difference between the 2-process and the 1-process curves (same seed, same
# global batch). Measured: 0.0045 (train_loss), 0.013 (valid_loss), 0.014 (valid_accuracy,
# 5 of 359 images); they differ because each rank's BatchNorm normalizes with its half batch's
# statistics (sync_bn is CUDA-only) and the gradients are summed in another order.
CURVE_TOLERANCE = {"train_loss": 0.02, "valid_loss": 0.04, "valid_accuracy": 0.04}


def test_devices_and_batch_size_are_checked_before_any_process_starts():
    assert requested_processes("auto", CPU) == 1
    assert requested_processes("2", CPU) == 2
    for bad in ("0", "two", "-1"):
        with pytest.raises(StagewiseError, match=re.escape(f"train.devices={bad}")):
            requested_processes(bad, CPU)
    with pytest.raises(StagewiseError, match=r"train\.batch_size=63 does not split evenly"):
        check_processes(63, False, 2, CPU)
    with pytest.raises(StagewiseError, match=r"train\.sync_bn=true needs CUDA"):
        check_processes(64, True, 2, CPU)
    check_processes(63, True, 1, CPU)  # one process: nothing to split or synchronize


class CountedStore(StoreRows):
    """The array store's rows, recording the rows of every read."""

    def __init__(self, store: Path, rows: np.ndarray):
        super().__init__(store, rows)
        self.reads: list[list[int]] = []

    def __getitem__(self, key):
        self.reads.append(np.asarray(key).tolist())
        return super().__getitem__(key)


@dataclass(frozen=True)
class CountedBatches(Batches):
    """In-memory images, recording the rows of every read."""

    reads: list[list[int]] = field(default_factory=list)

    def take(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.reads.append(idx.tolist())
        return super().take(idx)


class InputRecorder(nn.Module):
    """A linear classifier that keeps every (augmented, normalized) input it is given."""

    def __init__(self, n_in: int):
        super().__init__()
        self.linear = nn.Linear(n_in, 10)
        self.inputs: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        return self.linear(x.flatten(1))


def one_epoch(data: Batches | StreamedBatches, cfg: TrainConfig) -> dict:
    """The rows one epoch read, the inputs the model got and the generator's state after it."""
    net = InputRecorder(math.prod(data.images.shape[1:]))
    state = FitState(net, torch.Generator().manual_seed(0), total_epochs=1)
    state.optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
    state.scheduler = torch.optim.lr_scheduler.ConstantLR(state.optimizer, factor=1.0)
    train_one_epoch(net, data, cfg, Normalizer.create([0.5] * 3, [0.25] * 3, CPU), state)
    reads = data.reads if isinstance(data, CountedBatches) else data.images.reads
    return {"reads": reads, "inputs": net.inputs, "generator": state.generator.get_state()}


def stride_warnings(images: torch.Tensor, cfg: TrainConfig) -> list[str]:
    """DDP's stride warnings in one epoch of a 1-channel small CNN, built as training builds
    it, on this rank."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        model = prepare_model(small_cnn(1, 2, [8], 0.0), CPU)
        state = FitState(model, torch.Generator().manual_seed(0), total_epochs=1)
        state.optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
        state.scheduler = torch.optim.lr_scheduler.ConstantLR(state.optimizer, factor=1.0)
        data = Batches(images, torch.arange(len(images)) % 2, CPU)
        normalizer = Normalizer.create([0.5], [0.25], CPU)
        train_one_epoch(wrap(model, False, CPU), data, cfg, normalizer, state)
    return [str(w.message) for w in seen if "Grad strides" in str(w.message)]


def probe(batch: torch.Tensor, store: Path, cfg: TrainConfig, still: TrainConfig) -> dict:
    """What each rank sees, gathered on rank 0 (run by the launcher in 2 processes, or in
    this process as a 1-process reference)."""
    images = np.load(store)
    targets = torch.arange(len(images)) % 10
    mine = {
        "rank": rank(),
        "shard": batch[shard_rows(len(batch))].tolist(),
        "mean": float(mean_over_ranks(torch.tensor(float(rank())))),
        "agreed": agree(rank() == 0, CPU),  # rank 0 says stop, rank 1 does not: 0 wins
        "memory": one_epoch(CountedBatches(torch.from_numpy(images), targets, CPU), cfg),
        "stream": one_epoch(
            StreamedBatches(CountedStore(store, np.arange(len(images))), targets, CPU, 0), cfg
        ),
        "stride_warnings": stride_warnings(torch.from_numpy(images[..., :1]), still),
    }
    everyone = [mine]
    if world_size() > 1:
        everyone = [None] * world_size()
        dist.all_gather_object(everyone, mine)
    return {"pid": os.getpid(), "ranks": everyone}


def refuse(key: str) -> None:
    raise StagewiseError(f"{key}: refused on rank {rank()}")


def test_each_rank_reads_augments_and_trains_on_only_its_slice_of_the_global_batch(tmp_path):
    store = tmp_path / "images.npy"
    np.save(store, np.random.default_rng(0).integers(0, 256, (40, 12, 12, 3), dtype=np.uint8))
    augment = ("train.augment.flip=true", "train.augment.crop=0.5", "train.augment.brightness=0.2")
    cfg = compose_config("train.batch_size=8", *augment, "train.augment.contrast=0.2").train
    # No augmentation that resamples pixels (regression's default): a 1-channel model gets the
    # permuted, channels_last-strided batch. With the model's weights in another layout its
    # first conv's weight gradient came back with strides (9, 1, 3, 1) against the param's
    # (9, 9, 3, 1), and DDP warned that the gradient had to be copied (a 32 px regression run).
    resampling = ("rotate", "translate", "scale")
    still = compose_config(
        "train.batch_size=8", *(f"train.augment.{k}=0" for k in resampling)
    ).train
    [one] = run_distributed(probe, 1, CPU, torch.arange(8), store, cfg, still)["ranks"]
    handlers = [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)]
    seen = run_distributed(probe, 2, CPU, torch.arange(8), store, cfg, still)
    # torch's launcher installs its own handlers and leaves them: ours are put back.
    assert [signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)] == handlers
    assert seen["pid"] != os.getpid()  # the launcher's workers ran it, not this process
    assert [r["shard"] for r in seen["ranks"]] == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert [r["mean"] for r in seen["ranks"]] == [0.5, 0.5]
    assert [r["agreed"] for r in seen["ranks"]] == [True, True]
    assert [r["stride_warnings"] for r in seen["ranks"]] == [[], []]
    for loading in ("memory", "stream"):
        alone, ranks = one[loading], [r[loading] for r in seen["ranks"]]
        assert len(alone["reads"]) == 5 and all(len(rows) == 8 for rows in alone["reads"])
        for r, mine in enumerate(ranks):  # each rank read only its half of each global batch
            assert mine["reads"] == [rows[4 * r : 4 * r + 4] for rows in alone["reads"]], loading
            assert torch.equal(mine["generator"], alone["generator"])  # the same random stream
        for step, inputs in enumerate(alone["inputs"]):  # augmented exactly as by one process
            halves = torch.cat([mine["inputs"][step] for mine in ranks])
            assert torch.equal(halves, inputs), (loading, step)
    assert one["stream"]["reads"] == one["memory"]["reads"]


def test_a_worker_error_reaches_the_caller_as_one_line():
    with pytest.raises(StagewiseError) as error:
        run_distributed(refuse, 2, CPU, "train.some_key")
    message = str(error.value)
    assert re.fullmatch(
        r"training process of rank \d failed \(StagewiseError: train\.some_key: refused on "
        r"rank \d\); the other processes were stopped",
        message,
    ), message


def train_copy(digits_paths: Paths, root: Path, *overrides: str) -> Paths:
    """Train in a copy of the digits data; the 1-process copy is trained first in this
    process, so the 2-process workers also check that they find their own project's store
    (not the MLFLOW_TRACKING_URI the first run exported)."""
    shutil.copytree(digits_paths.root / "data", root / "data")
    paths = Paths(root)
    train.run(compose_config(*TINY, *overrides), paths)
    return paths


def runs_of(paths: Paths) -> list:
    client = open_store(paths).client
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def has_run(paths: Paths) -> bool:
    """Whether rank 0 created its MLflow run yet (read without MLflow: no schema migration
    racing the stage's)."""
    try:
        with sqlite3.connect(paths.mlruns / "mlflow.db", timeout=1) as db:
            return bool(db.execute("select count(*) from runs").fetchone()[0])
    except sqlite3.Error:
        return False


def test_two_processes_train_one_model_in_one_run_like_one_process(digits_paths, tmp_path):
    single = train_copy(digits_paths, tmp_path / "one")
    double = train_copy(digits_paths, tmp_path / "two", "train.devices=2")
    [run] = runs_of(double)  # one run for the model, none per rank
    assert run.info.status == "FINISHED"
    assert run.data.tags["train.processes"] == "2"
    assert read_json(ModelFiles(double.model_dir).run, "train")["run_id"] == run.info.run_id
    classifier = Classifier.load(ModelFiles(double.model_dir))
    assert classifier.spec.classes == [str(d) for d in range(10)]
    assert not double.checkpoint.exists()
    one, two = read_csv(single.train_history), read_csv(double.train_history)
    assert [r["epoch"] for r in two] == ["1", "2"]
    for metric, tolerance in CURVE_TOLERANCE.items():
        gaps = [abs(float(a[metric]) - float(b[metric])) for a, b in zip(one, two, strict=True)]
        assert max(gaps) < tolerance, (metric, gaps)
    assert one != two  # two processes really ran: BatchNorm saw half batches


def worker_pids(parent: int) -> list[int]:
    """The launcher's worker processes (multiprocessing spawn children of the stage process),
    in the order it started them: local rank 0, 1, ... (their rank is set inside the process,
    so /proc/<pid>/environ cannot tell)."""
    workers = []
    for proc in Path("/proc").iterdir():
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (proc / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if int(stat[1]) == parent and b"spawn_main" in cmdline:
            workers.append((int(stat[19]), int(proc.name)))  # (start time, pid)
    return [pid for _, pid in sorted(workers)]


@pytest.fixture
def stage_copy(digits_paths, tmp_path) -> ProjectCopy:
    copy = ProjectCopy.create(tmp_path / "project")
    shutil.copytree(digits_paths.root / "data", copy.root / "data", dirs_exist_ok=True)
    return copy


def test_a_dead_worker_ends_the_training_with_one_line_and_resume_finishes_its_run(stage_copy):
    epochs = 12  # 0.3-1 s each in 2 processes here: the kill lands well before the end
    command = [sys.executable, "-m", "stages.train", *TINY, f"train.epochs={epochs}",
               "train.devices=2", "train.checkpoint_every_s=0"]  # fmt: skip
    checkpoint = Paths(stage_copy.root).checkpoint
    stage = subprocess.Popen(
        command, cwd=stage_copy.root, env=stage_copy.env(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline, victim = time.monotonic() + 60, None
    while time.monotonic() < deadline and stage.poll() is None:
        workers = worker_pids(stage.pid)
        victim = workers[1] if len(workers) == 2 else None
        if victim and checkpoint.exists():
            break  # an epoch is done and checkpointed: training is under way
        time.sleep(0.2)
    assert victim, "no worker of rank 1 appeared"
    os.kill(victim, signal.SIGKILL)
    output, _ = stage.communicate(timeout=60)
    assert stage.returncode == 2, output
    [error] = [line for line in output.splitlines() if line.startswith("error:")]
    assert "training process of rank" in error, output
    [run] = runs_of(Paths(stage_copy.root))
    assert run.info.status in ("FAILED", "KILLED"), output
    # rank 0 saw rank 1 go; gloo words it "Connection reset by peer" or "... closed by peer"
    assert re.search(r"Connection (reset|closed) by peer", run.data.tags["error"])

    resumed = stage_copy.run(*command, "train.resume=true", check=False)
    [after] = runs_of(Paths(stage_copy.root))  # the same run, continued
    assert after.info.run_id == run.info.run_id, resumed.stdout + resumed.stderr
    assert after.info.status == "FINISHED", resumed.stdout + resumed.stderr
    client = open_store(Paths(stage_copy.root)).client
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "epoch/valid_loss")]
    assert sorted(set(steps)) == list(range(1, epochs + 1))
    assert not checkpoint.exists()  # deleted once training finished


def test_torchrun_starts_the_stage_without_a_second_launch(stage_copy):
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    result = stage_copy.run(*torchrun, "-m", "stages.train", *TINY, "train.devices=2")
    [run] = runs_of(Paths(stage_copy.root))  # rank 0's alone: no run per rank, no relaunch
    assert run.info.status == "FINISHED", result.stdout + result.stderr
    assert run.data.tags["train.processes"] == "2"
    assert not list(stage_copy.root.glob("outputs")) and not list(stage_copy.root.glob(".hydra"))
    assert Classifier.load(ModelFiles(Paths(stage_copy.root).model_dir)).spec.arch == "small_cnn"
