"""Training checkpoints: everything needed to continue exactly where training stopped.

Written atomically (a kill mid-write leaves the previous checkpoint) every
train.checkpoint_every_s seconds, at the end and on an interruption (see callbacks.Checkpoint),
into checkpoints/ which is no DVC output, so DVC does not delete it before rerunning train.
Read back with weights_only=True: a checkpoint holds tensors and plain values, never code.
"""

import io
import pickle
from pathlib import Path
from typing import Any

import torch

from pipeline.core.errors import StagewiseError
from pipeline.core.io import atomic_write

KEYS = ("identity", "epoch", "model", "optimizer", "scheduler", "rng", "history", "run_id")


def rng_state(generator: torch.Generator) -> dict[str, Any]:
    """The random states training draws from: shuffling/augmentation, dropout, CUDA."""
    state = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def serialize_checkpoint(checkpoint: dict[str, Any]) -> bytes:
    """The checkpoint as torch.save writes it: a snapshot, whatever training does next."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def save_checkpoint(path: Path, serialized: bytes) -> None:
    atomic_write(path, lambda tmp: tmp.write_bytes(serialized))


def checkpoint_run_id(path: Path) -> str | None:
    """The MLflow run a checkpoint was written for, or None when there is no readable one."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError):
        return None
    return checkpoint.get("run_id") if isinstance(checkpoint, dict) else None


def load_checkpoint(path: Path, identity: str) -> dict[str, Any]:
    """The checkpoint at path, which must have been written for the same configuration."""
    fresh = "train without train.resume to start over"
    if not path.is_file():
        raise StagewiseError(f"train.resume=true, but there is no checkpoint at {path}; {fresh}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise StagewiseError(f"checkpoint {path} is unreadable ({first}); {fresh}") from None
    if not isinstance(checkpoint, dict) or set(KEYS) - set(checkpoint):
        raise StagewiseError(f"checkpoint {path} is not a stagewise checkpoint; {fresh}")
    if checkpoint["identity"] != identity:
        raise StagewiseError(
            f"checkpoint {path} was written for another configuration or other data; "
            f"resume with the settings it was made with, or {fresh}"
        )
    return checkpoint
