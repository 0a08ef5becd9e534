"""Training over N processes with DistributedDataParallel, and the rank-0 rule.

torchvision's references/classification/utils.py in one place: `is_main_process` decides who
writes files and talks to MLflow, and the helpers below are no-ops in a single process, so
the fit loop reads the same with 1 or N processes.

`train.devices=N` (or `auto`) starts N workers through PyTorch's elastic launcher (what
`torchrun` runs); a process started by torchrun (WORLD_SIZE in its environment) joins the
process group instead of launching again. NCCL on CUDA (one GPU per process), gloo on the CPU.
Each rank reads and trains on its slice of every global batch (train.batch_size images in all),
DDP averages the gradients, and every rank evaluates the full valid split with the same weights.
"""

import logging
import os
import signal
import sys
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, record
from torch.distributed.launcher.api import LaunchConfig, elastic_launch

from pipeline.core.errors import StagewiseError

log = logging.getLogger(__name__)

T = TypeVar("T")


def world_size() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main_process() -> bool:
    """Rank 0 alone writes outputs and checkpoints and logs to MLflow."""
    return rank() == 0


def started_by_torchrun() -> bool:
    """True in a worker of torchrun or of launch() below: both set WORLD_SIZE and RANK."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def requested_processes(devices: str, device: torch.device) -> int:
    """train.devices as a process count: N, or auto = every visible GPU (1 on the CPU)."""
    if devices == "auto":
        return torch.cuda.device_count() if device.type == "cuda" else 1
    if not devices.isdigit() or int(devices) < 1:
        raise StagewiseError(
            f"train.devices={devices}: use a number of processes (1, 2, ...) or auto"
        )
    n = int(devices)
    if device.type == "cuda" and n > torch.cuda.device_count():
        raise StagewiseError(
            f"train.devices={n} but {torch.cuda.device_count()} CUDA GPU(s) are visible; "
            "use train.devices=auto or fewer"
        )
    return n


def check_processes(batch_size: int, sync_bn: bool, processes: int, device: torch.device) -> None:
    """Refuse, before any process starts, what N processes cannot do."""
    if batch_size % processes:
        raise StagewiseError(
            f"train.batch_size={batch_size} does not split evenly over train.devices={processes} "
            "processes (it is the global batch); use a multiple of the process count"
        )
    if sync_bn and processes > 1 and device.type != "cuda":
        raise StagewiseError(
            "train.sync_bn=true needs CUDA: torch's SyncBatchNorm does not run on the CPU; "
            "set train.sync_bn=false"
        )


def run_distributed(fn: Callable[..., T], processes: int, device: torch.device, *args: Any) -> T:
    """fn(*args) in this process, in the process group torchrun set up, or in `processes`
    workers started by the elastic launcher; returns rank 0's result."""
    if started_by_torchrun():
        with process_group(device):
            return fn(*args)
    if processes == 1:
        return fn(*args)
    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=uuid.uuid4().hex,
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",  # a free port: concurrent trainings do not collide
        max_restarts=0,  # a failed worker fails the training; resume with train.resume
    )
    try:
        with handlers_kept():
            results = elastic_launch(config, worker)(fn, device, *args)
    except ChildFailedError as e:
        rank_, failure = e.get_first_failure()
        raise StagewiseError(
            f"training process of rank {rank_} failed ({failure_reason(failure)}); "
            "the other processes were stopped"
        ) from None
    return results[0]


@contextmanager
def handlers_kept():
    """Puts back this process's signal handlers: the launcher replaces those of SIGTERM, SIGINT,
    SIGHUP and SIGQUIT with one raising its SignalException and leaves it, so a later SIGTERM
    (and a process forked later, which inherits it) would no longer exit the stage's way."""
    kept = {
        s: signal.getsignal(s)
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
    }
    try:
        yield
    finally:
        for signum, handler in kept.items():
            signal.signal(signum, handler)


def failure_reason(failure: Any) -> str:
    """The failed worker's exception message, else its exit code (killed by a signal: -9)."""
    message = failure.message
    if isinstance(message, dict):  # the error file's record: {"message": ..., "extraInfo": ...}
        message = message.get("message", "")
    first = str(message).strip().splitlines()[0] if str(message).strip() else ""
    return first or f"exit code {failure.exitcode}"


@record  # writes the exception to the launcher's error file: the parent's one-line message
def worker(fn: Callable[..., T], device: torch.device, *args: Any) -> T:
    """One process of launch(): the launcher set the rank and rendezvous in its environment."""
    signal.signal(signal.SIGTERM, exit_unless_failing)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    with process_group(device):
        return fn(*args)


def exit_unless_failing(signum: int, frame: Any) -> None:
    """SIGTERM in a worker: exit through Python, so rank 0's MLflow run ends KILLED instead of
    staying RUNNING (as the stages' own handler does). The launcher sends it to every worker
    when one fails; rank 0 has then usually caught gloo's error and is marking its run FAILED,
    and an exit raised inside that database write left the run RUNNING (seen in 1 of 4 tries
    of tests/test_distributed.py), so a worker already handling an error finishes doing so."""
    if sys.exc_info()[1] is None:
        sys.exit(128 + signum)


@contextmanager
def process_group(device: torch.device):
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend)
    if not is_main_process():  # one log, rank 0's; the others only warn
        logging.getLogger().setLevel(logging.WARNING)
        logging.getLogger("stagewise").setLevel(logging.WARNING)
    try:
        yield
    finally:
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """This process's device: its own GPU (LOCAL_RANK) when several share a node."""
    if device.type == "cuda" and dist.is_initialized():
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def wrap(model: nn.Module, sync_bn: bool, device: torch.device) -> nn.Module:
    """The module that trains: DistributedDataParallel over the process group (BatchNorm
    synchronized across ranks when asked), the model itself in a single process."""
    if not dist.is_initialized():
        return model
    if sync_bn:  # in place: state.model (saved, checkpointed) holds the same layers
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def shard_rows(total: int) -> slice:
    """This rank's rows of a global batch of total images (all of them in a single process)."""
    size = total // world_size()
    return slice(rank() * size, (rank() + 1) * size)


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of a per-rank scalar over all ranks (e.g. each rank's train loss)."""
    if world_size() == 1:
        return value
    value = value.clone()
    dist.all_reduce(value)
    return value / world_size()


def agree(flag: bool, device: torch.device) -> bool:
    """Rank 0's decision (e.g. early stopping) on every rank, so all stop together."""
    if world_size() == 1:
        return flag
    decision = torch.tensor([int(flag)], device=device)
    dist.broadcast(decision, src=0)
    return bool(decision.item())
