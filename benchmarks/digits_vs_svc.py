"""Digits: test error of the default pipeline vs scikit-learn's SVC(gamma=0.001), side by side.

For each split seed, runs the real stages (ingest once, then split, normalize-stats, train,
test-holdout) with the default config in a scratch folder, and fits SVC(gamma=0.001) on
exactly the same train split (pixels scaled to 0..16, as in scikit-learn's digits example).
Prints per-seed errors and the ratio of the mean errors (goal: <= 0.7).

    python benchmarks/digits_vs_svc.py [--seeds 42 43 44] [extra Hydra overrides]
"""

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from sklearn.svm import SVC

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.core.paths import PROJECT_ROOT, Paths
from pipeline.data.split import load_split_images
from stages import ingest, normalize_stats, split, test_holdout, train
from stages.common import validated


def config(overrides: list[str]):
    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base=None):
        return validated(compose(config_name="config", overrides=overrides))


def svc_test_error(paths: Paths) -> float:
    fit_on, held_out = load_split_images(paths, "train"), load_split_images(paths, "test")

    def features(images: np.ndarray) -> np.ndarray:
        return images.reshape(len(images), -1) / (255 / 16)  # back to the 0..16 scale

    svc = SVC(gamma=0.001).fit(features(fit_on.images), fit_on.targets)
    return float((svc.predict(features(held_out.images)) != held_out.targets).mean())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44, 45, 46])
    args, overrides = parser.parse_known_args()
    logging.basicConfig(level=logging.WARNING)
    ours, baseline = [], []
    with tempfile.TemporaryDirectory() as scratch:
        paths = Paths(Path(scratch))
        ingest.run(config(overrides), paths)
        for seed in args.seeds:
            cfg = config([*overrides, f"split.seed={seed}"])
            start = time.perf_counter()
            split.run(cfg, paths)
            normalize_stats.run(cfg, paths)
            train.run(cfg, paths)
            ours.append(test_holdout.run(cfg, paths)["error_rate"])
            seconds = time.perf_counter() - start
            baseline.append(svc_test_error(paths))
            print(
                f"split.seed={seed}: pipeline test error {ours[-1]:.4f}  SVC {baseline[-1]:.4f}  "
                f"(pipeline {seconds:.1f}s)"
            )
    mean_ours, mean_svc = float(np.mean(ours)), float(np.mean(baseline))
    print(
        f"mean test error over {len(ours)} splits: pipeline {mean_ours:.4f}, SVC(gamma=0.001) {mean_svc:.4f}"
    )
    print(f"ratio pipeline/SVC: {mean_ours / mean_svc:.2f} (goal <= 0.70)")


if __name__ == "__main__":
    main()
