"""Memory layout: epoch time with the model and its input channels_last against plain
N x C x H x W (contiguous), on the CPU (oneDNN) or CUDA.

Three workloads, each trained with pipeline.train.loop.fit (default train config, so with the
default augmentation) alternately in the two layouts (same seed, data and model; a warm-up fit
of each workload is not counted):
  digits   - small_cnn [32, 64, 128] (the default model) on the 8x8 digits, 1437 images.
  random32 - small_cnn [32, 64, 128] on 512 random 32x32 RGB images.
  resnet18 - torchvision resnet18 (random weights) on 256 random 64x64 RGB images.
Prints, per workload, the median epoch time of each layout and the median of the plain /
channels_last ratios of paired runs (> 1: channels_last is faster). CPU: 1 thread
(train.cpu_threads' default). Takes about a minute on a 2-core machine.

    python benchmarks/channels_last_cpu.py [--epochs 2] [--pairs 3]
"""

import argparse
import statistics
import sys
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
from pipeline.train.loop import fit  # noqa: E402
from tests.conftest import compose_config  # noqa: E402


@dataclass(frozen=True)
class PlainNormalizer(Normalizer):
    """The model's input as a contiguous N x C x H x W tensor."""

    def __call__(self, batch, transform=None):
        return super().__call__(batch, transform).contiguous()


def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return (data.images * 255 / 16).astype(np.uint8)[..., None], data.target


def random_rgb(n: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), np.arange(n) % 10


WORKLOADS = {
    "digits": (digits, "small_cnn"),
    "random32": (lambda: random_rgb(512, 32), "small_cnn"),
    "resnet18": (lambda: random_rgb(256, 64), "resnet18"),
}


def epoch_seconds(name: str, epochs: int, channels_last: bool, device: torch.device) -> float:
    make, arch = WORKLOADS[name]
    images, targets = make()
    n_valid = len(images) // 5
    channels, size = images.shape[-1], images.shape[1]
    train = Batches.from_numpy(images[n_valid:], targets[n_valid:], device)
    valid = Batches.from_numpy(images[:n_valid], targets[:n_valid], device)
    torch.manual_seed(0)
    widths = [32, 64, 128] if arch == "small_cnn" else None
    spec = ModelSpec(
        arch, [str(c) for c in range(10)], channels, size, [0.5] * channels,
        [0.25] * channels, widths, 0.0,
    )  # fmt: skip
    model = build_model(spec)
    model = prepare_model(model, device) if channels_last else model.to(device)
    layout = Normalizer if channels_last else PlainNormalizer
    normalizer = layout.create(spec.mean, spec.std, device)
    cfg = compose_config(f"train.epochs={epochs}").train
    state = fit(model, train, valid, cfg, normalizer, seed=0)
    return statistics.median(r.epoch_seconds for r in state.history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    device = select_device("auto")
    if device.type == "cpu":
        torch.set_num_threads(1)
    print(f"device {device}, {args.epochs} epochs per fit, {args.pairs} plain/channels_last pairs")
    for name in WORKLOADS:
        epoch_seconds(name, 1, True, device)  # warm-up
        plain, last, ratios = [], [], []
        for _ in range(args.pairs):
            plain.append(epoch_seconds(name, args.epochs, False, device))
            last.append(epoch_seconds(name, args.epochs, True, device))
            ratios.append(plain[-1] / last[-1])
        print(
            f"{name:9s} epoch plain {statistics.median(plain) * 1000:8.1f} ms   "
            f"channels_last {statistics.median(last) * 1000:8.1f} ms   "
            f"plain/channels_last median {statistics.median(ratios):.3f}  (pairs: "
            + ", ".join(f"{r:.2f}" for r in ratios)
            + ")",
            flush=True,
        )


if __name__ == "__main__":
    main()
