"""Shared by the benchmarks that time two variants of a fit side by side (activation stats
off/on, plain/channels_last layout): the workloads, one fit's median epoch time, and the loop
that alternates the variants and prints the medians and the paired ratios.

Each fit runs pipeline.train.loop.fit with the default train config (so with the default
augmentation), seed 0, a fifth of the images as the valid split; an epoch is its train pass +
valid pass (fit's epoch_seconds). Runs on CUDA when present, else the CPU with 1 thread
(train.cpu_threads' default).
"""

import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from pipeline.model.device import Batches, prepare_model, select_device  # noqa: E402
from pipeline.model.networks import ModelSpec, build_model  # noqa: E402
from pipeline.model.preprocess import Normalizer  # noqa: E402
from pipeline.train.loop import Callback, fit  # noqa: E402
from tests.conftest import compose_config  # noqa: E402


def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return (data.images * 255 / 16).astype(np.uint8)[..., None], data.target


def random_rgb(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), np.arange(n) % 10


@dataclass(frozen=True)
class Workload:
    data: Callable[[], tuple[np.ndarray, np.ndarray]]
    arch: str
    widths: list[int] | None  # small_cnn's


@dataclass(frozen=True)
class PlainNormalizer(Normalizer):
    """The model's input as a contiguous N x C x H x W tensor."""

    def __call__(self, batch, transform=None):
        return super().__call__(batch, transform).contiguous()


def epoch_seconds(
    workload: Workload,
    epochs: int,
    device: torch.device,
    channels_last: bool = True,
    callbacks: Callable[[torch.nn.Module], tuple[Callback, ...]] = lambda model: (),
) -> float:
    """The median epoch time of one fit; channels_last=False keeps the model and its input
    in the plain layout (the pipeline's is channels_last)."""
    images, targets = workload.data()
    n_valid = len(images) // 5
    channels, size = images.shape[-1], images.shape[1]
    train = Batches.from_numpy(images[n_valid:], targets[n_valid:], device)
    valid = Batches.from_numpy(images[:n_valid], targets[:n_valid], device)
    torch.manual_seed(0)
    spec = ModelSpec(
        workload.arch, [str(c) for c in range(10)], channels, size, [0.5] * channels,
        [0.25] * channels, workload.widths, 0.0,
    )  # fmt: skip
    model = build_model(spec)
    model = prepare_model(model, device) if channels_last else model.to(device)
    layout = Normalizer if channels_last else PlainNormalizer
    normalizer = layout.create(spec.mean, spec.std, device)
    cfg = compose_config(f"train.epochs={epochs}").train
    state = fit(model, train, valid, cfg, normalizer, seed=0, callbacks=callbacks(model))
    return statistics.median(r.epoch_seconds for r in state.history)


def compare(
    workloads: dict[str, Workload],
    variants: tuple[str, str],
    measure: Callable[[Workload, int, torch.device, bool], float],
    epochs: int,
    pairs: int,
) -> None:
    """Per workload: a warm-up fit, then `pairs` alternating fits of the two variants
    (measure's last argument: False for the first, True for the second); prints each
    variant's median epoch time and the median of the paired second/first ratios."""
    device = select_device("auto")
    if device.type == "cpu":
        torch.set_num_threads(1)
    first, second = variants
    print(f"device {device}, {epochs} epochs per fit, {pairs} {first}/{second} pairs")
    for name, workload in workloads.items():
        measure(workload, 1, device, True)  # warm-up: first-call costs, lazy imports
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(pairs):
            for variant in (False, True):
                times[variant].append(measure(workload, epochs, device, variant))
        ratios = [b / a for a, b in zip(times[False], times[True], strict=True)]
        print(
            f"{name:9s} epoch {first} {statistics.median(times[False]) * 1000:8.1f} ms   "
            f"{second} {statistics.median(times[True]) * 1000:8.1f} ms   "
            f"{second}/{first} median {statistics.median(ratios):.3f}  (pairs: "
            + ", ".join(f"{r:.2f}" for r in ratios)
            + ")",
            flush=True,
        )
