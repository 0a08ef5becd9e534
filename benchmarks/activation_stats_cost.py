"""What train.activation_stats costs: epoch time with the ActivationStats hooks off and on.

Two workloads, each trained alternately without and with the callback (same seed, data and
model; benchmarks/paired_fits.py):
  digits   - small_cnn [8, 16] on the 8x8 digits (sklearn's copy), 1437 images.
  random32 - small_cnn [16, 32, 64] on 512 random 32x32 RGB images.
Prints, per workload, the median epoch time of each variant and the median of the on/off
ratios of paired runs. Takes < 60 s on a 2-core machine.

    python benchmarks/activation_stats_cost.py [--epochs 3] [--pairs 3]
"""

import argparse

from paired_fits import Workload, compare, digits, epoch_seconds, random_rgb

from pipeline.train.activations import ActivationStats

WORKLOADS = {
    "digits": Workload(digits, "small_cnn", [8, 16]),
    "random32": Workload(lambda: random_rgb(512, 32), "small_cnn", [16, 32, 64]),
}


def with_stats(workload: Workload, epochs: int, device, on: bool) -> float:
    callbacks = (lambda model: (ActivationStats(model),)) if on else (lambda model: ())
    return epoch_seconds(workload, epochs, device, callbacks=callbacks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    compare(WORKLOADS, ("off", "on"), with_stats, args.epochs, args.pairs)


if __name__ == "__main__":
    main()
