"""Memory layout: epoch time with the model and its input channels_last (the pipeline's)
against plain N x C x H x W (contiguous), on the CPU (oneDNN) or CUDA.

Three workloads, each trained alternately in the two layouts (same seed, data and model;
benchmarks/paired_fits.py):
  digits   - small_cnn [32, 64, 128] (the default model) on the 8x8 digits, 1437 images.
  random32 - small_cnn [32, 64, 128] on 512 random 32x32 RGB images.
  resnet18 - torchvision resnet18 (random weights) on 256 random 64x64 RGB images.
Prints, per workload, the median epoch time of each layout and the median of the
channels_last/plain ratios of paired runs (< 1: channels_last is faster). Takes about a
minute on a 2-core machine.

    python benchmarks/channels_last_cpu.py [--epochs 2] [--pairs 3]
"""

import argparse

from paired_fits import Workload, compare, digits, epoch_seconds, random_rgb

WORKLOADS = {
    "digits": Workload(digits, "small_cnn", [32, 64, 128]),
    "random32": Workload(lambda: random_rgb(512, 32), "small_cnn", [32, 64, 128]),
    "resnet18": Workload(lambda: random_rgb(256, 64), "resnet18", None),
}


def in_layout(workload: Workload, epochs: int, device, channels_last: bool) -> float:
    return epoch_seconds(workload, epochs, device, channels_last=channels_last)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    compare(WORKLOADS, ("plain", "channels_last"), in_layout, args.epochs, args.pairs)


if __name__ == "__main__":
    main()
