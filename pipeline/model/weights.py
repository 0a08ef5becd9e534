"""Pretrained weights: where they come from, and how they go into a model with a new head.

model.weights names the source: torchvision's named weights (DEFAULT, IMAGENET1K_V1, ...),
a local .safetensors file or state dict, or `runs:/<run id>` of an earlier training run of
this project. Nothing is ever unpickled: state dicts are read with weights_only=True.
The source's head is always dropped (fastai's new head for the new classes), and a first
convolution with another channel count is adapted as fastai does (summed for greyscale).
"""

import logging
import pickle
import re
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from pipeline.core.errors import StagewiseError
from pipeline.core.paths import ModelFiles
from pipeline.model.networks import load_spec

log = logging.getLogger(__name__)

RUN_PREFIX = "runs:/"


@dataclass(frozen=True)
class Transferred:
    """What transfer() did: tensors copied, first-layer tensors adapted, head tensors left new."""

    loaded: int
    adapted: list[str]
    new_head: list[str]


def pretrained_state(
    source: str, arch: str, base: Path, fetch_run: Callable[[str], ModelFiles]
) -> dict[str, torch.Tensor]:
    """The tensors model.weights names; relative file paths are taken from base."""
    if source.startswith(RUN_PREFIX):
        run_id = source[len(RUN_PREFIX) :].strip("/")
        files = fetch_run(run_id)
        trained = load_spec(files.spec).arch
        if trained != arch:
            raise StagewiseError(
                f"model.weights={source} is a {trained}, but model.arch={arch}; "
                f"set model.arch={trained}"
            )
        return read_state_file(files.weights)
    if "/" in source or Path(source).suffix:  # a file: torchvision's names have neither
        path = Path(source).expanduser()
        return read_state_file(path if path.is_absolute() else base / path)
    return torchvision_state(arch, source)


def read_state_file(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file or a torch.save'd state dict, never unpickling code."""
    if not path.is_file():
        raise StagewiseError(f"model.weights={path}: no such file")
    if path.suffix == ".safetensors":
        try:
            return load_file(str(path))
        except SafetensorError as e:
            raise StagewiseError(f"model.weights={path} is not a safetensors file ({e})") from None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if found := re.search(r"GLOBAL (\S+) was not an allowed global", str(e)):
            raise StagewiseError(
                f"model.weights={path} holds pickled Python objects ({found.group(1)}), not "
                "just tensors, and is refused (unpickling could run code); save "
                "model.state_dict() or a .safetensors file"
            ) from None
        raise StagewiseError(f"model.weights={path} is not a torch weights file") from None
    # Broad on purpose: on bytes that are no torch file (a text file, say), torch's weights-only
    # unpickler raises whatever the bytes lead it to: KeyError, IndexError, struct.error, ...
    except Exception as e:
        first = str(e).splitlines()[0] if str(e) else ""
        raise StagewiseError(
            f"model.weights={path} is not a torch weights file ({type(e).__name__}: {first}); "
            "give a .safetensors file or a torch.save'd state dict"
        ) from None
    return tensors_of(loaded, path)


def tensors_of(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    """The state dict inside a loaded file: bare, or under "state_dict"/"model" (checkpoints)."""
    if isinstance(loaded, dict):
        for key in ("state_dict", "model"):
            if isinstance(loaded.get(key), dict):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise StagewiseError(f"model.weights={path} holds no state dict of named tensors")
    return loaded


def torchvision_state(arch: str, name: str) -> dict[str, torch.Tensor]:
    """torchvision's named weights for arch, from torch's cache or downloaded into it once."""
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError):
        raise StagewiseError(
            f"model.weights={name}: named weights are torchvision's, and model.arch={arch} is "
            "not a torchvision model; use a weights file or runs:/<run id>"
        ) from None
    try:
        weights = enum[name]
    except KeyError:
        valid = ", ".join(["DEFAULT", *(w.name for w in enum)])
        raise StagewiseError(
            f"model.weights={name} is not a weights name of {arch}; valid: {valid}"
        ) from None
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name
    try:
        return torch.hub.load_state_dict_from_url(
            weights.url, progress=False, check_hash=True, weights_only=True
        )
    except (urllib.error.URLError, OSError) as e:
        raise StagewiseError(
            f"model.weights={name}: {arch}'s {weights.name} weights are not in the cache "
            f"({cached}) and cannot be downloaded ({e}); download {weights.url} to that path "
            "on a connected machine, or give a local file as model.weights"
        ) from None


def head_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the classifier's last linear layer: the head replaced for new classes."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            last = name
    if last is None:
        raise StagewiseError("the model has no linear head to replace")
    return {f"{last}.{key}" if last else key for key in model.get_submodule(last).state_dict()}


def adapt_channels(source: torch.Tensor, target_shape: torch.Size) -> torch.Tensor | None:
    """A first-conv weight for another input channel count, as fastai adapts it, or None."""
    same_but_inputs = (
        source.ndim == 4
        and source.shape[0] == target_shape[0]
        and source.shape[2:] == target_shape[2:]
    )
    if not same_but_inputs:
        return None
    if target_shape[1] == 1:  # greyscale input: the sum responds to grey as to the colours
        return source.sum(dim=1, keepdim=True)
    if source.shape[1] == 1:
        return source.repeat(1, target_shape[1], 1, 1) / target_shape[1]
    return None


def transfer(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> Transferred:
    """Copy every tensor but the head's from state into model; all of them must fit."""
    head = head_keys(model)
    chosen, adapted, missing, mismatched = {}, [], [], []
    for key, target in model.state_dict().items():
        if key in head:
            continue
        if key not in state:
            missing.append(key)
            continue
        tensor = state[key]
        if tensor.shape != target.shape:
            tensor = adapt_channels(tensor, target.shape)
            if tensor is None:
                mismatched.append(f"{key} {tuple(state[key].shape)} vs {tuple(target.shape)}")
                continue
            adapted.append(key)
        chosen[key] = tensor.to(target.dtype)
    if missing or mismatched:
        problems = [f"missing {', '.join(missing[:3])}"] if missing else []
        problems += [f"shape {', '.join(mismatched[:3])}"] if mismatched else []
        raise StagewiseError(
            f"model.weights={source} does not fit this model ({'; '.join(problems)}); "
            "check model.arch (and model.widths) against the weights' model"
        )
    model.load_state_dict(chosen, strict=False)
    return Transferred(len(chosen), adapted, sorted(head))
