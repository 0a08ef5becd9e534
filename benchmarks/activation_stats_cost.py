"""What train.activation_stats costs: epoch time with the ActivationStats hooks off and on.

Two workloads, each trained with pipeline.train.loop.fit alternately without and with the
callback (same seed, data and model; the first, warm-up fit of each workload is not counted):
  digits   - small_cnn [8, 16] on the 8x8 digits (sklearn's copy), 1437 images.
  random32 - small_cnn [16, 32, 64] on 512 random 32x32 RGB images.
Prints, per workload, the median epoch time (train pass + valid pass, fit's epoch_seconds) of
each variant and the median of the on/off ratios of paired runs. Runs on CUDA when present,
else the CPU with 1 thread (train.cpu_threads' default). Takes < 60 s on a 2-core machine.

    python benchmarks/activation_stats_cost.py [--epochs 3] [--pairs 3]
"""

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from pipeline.model.device import Batches, prepare_model, select_device  # noqa: E402
from pipeline.model.networks import ModelSpec, build_model  # noqa: E402
from pipeline.model.preprocess import Normalizer  # noqa: E402
from pipeline.train.activations import ActivationStats  # noqa: E402
from pipeline.train.loop import fit  # noqa: E402
from tests.conftest import compose_config  # noqa: E402


def digits() -> tuple[np.ndarray, np.ndarray]:
    data = load_digits()
    return (data.images * 255 / 16).astype(np.uint8)[..., None], data.target


def random32() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (512, 32, 32, 3), dtype=np.uint8), np.arange(512) % 10


WORKLOADS = {"digits": (digits, [8, 16]), "random32": (random32, [16, 32, 64])}


def epoch_seconds(name: str, epochs: int, on: bool, device: torch.device) -> float:
    make, widths = WORKLOADS[name]
    images, targets = make()
    n_valid = len(images) // 5
    channels, size = images.shape[-1], images.shape[1]
    train = Batches.from_numpy(images[n_valid:], targets[n_valid:], device)
    valid = Batches.from_numpy(images[:n_valid], targets[:n_valid], device)
    torch.manual_seed(0)
    spec = ModelSpec(
        "small_cnn", [str(c) for c in range(10)], channels, size, [0.5] * channels,
        [0.25] * channels, widths, 0.0,
    )  # fmt: skip
    model = prepare_model(build_model(spec), device)
    cfg = compose_config(f"train.epochs={epochs}").train
    normalizer = Normalizer.create(spec.mean, spec.std, device)
    callbacks = (ActivationStats(model),) if on else ()
    state = fit(model, train, valid, cfg, normalizer, seed=0, callbacks=callbacks)
    return statistics.median(r.epoch_seconds for r in state.history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    device = select_device("auto")
    if device.type == "cpu":
        torch.set_num_threads(1)
    print(f"device {device}, {args.epochs} epochs per fit, {args.pairs} off/on pairs")
    for name in WORKLOADS:
        epoch_seconds(name, 1, True, device)  # warm-up: first-call costs, hooks' imports
        off, on, ratios = [], [], []
        for _ in range(args.pairs):
            off.append(epoch_seconds(name, args.epochs, False, device))
            on.append(epoch_seconds(name, args.epochs, True, device))
            ratios.append(on[-1] / off[-1])
        print(
            f"{name:9s} epoch off {statistics.median(off) * 1000:7.1f} ms   "
            f"on {statistics.median(on) * 1000:7.1f} ms   "
            f"on/off median {statistics.median(ratios):.3f}  (pairs: "
            + ", ".join(f"{r:.2f}" for r in ratios)
            + ")"
        )


if __name__ == "__main__":
    main()
