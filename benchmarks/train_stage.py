"""The train stage as users run it against a minimal hand-written loop, side by side.

For each image size, in a temporary copy of the project with digits ingested at that size:
  stage - `python -m stages.train` in a subprocess: MLflow run, metric logging, checkpoints,
          model packaging, everything. Its epoch loop is timed from its own log lines (the
          time from the end of epoch 1 to the end of the last epoch, over epochs - 1, so each
          epoch's callbacks are in), and the whole process by its wall time. Run with the
          default train.checkpoint_every_s and with 0 (an fsync'd checkpoint after every
          epoch, as the stage did before the interval existed).
  hand  - benchmarks/train_loop.py's hand loop in this process on the same arrays: same
          model, batch size, AdamW + one-cycle, a valid pass per epoch.
Both train without augmentation on one intra-op thread (the stage's train.cpu_threads
default; OMP_NUM_THREADS=1 for the hand loop), alternating so machine noise hits them alike.
Prints ms/epoch and the hand/stage ratios (goal for the epoch loop: >= 0.95).

    python benchmarks/train_stage.py [--sizes 8 32] [--epochs 6 3] [--repeats 2]
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path

os.environ["OMP_NUM_THREADS"] = "1"  # before torch loads, for the hand loop and the stage
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import torch  # noqa: E402
from train_loop import hand_loop, new_model  # noqa: E402

from pipeline.core.io import read_json  # noqa: E402
from pipeline.core.paths import Paths  # noqa: E402
from pipeline.data.split import load_split_images  # noqa: E402
from pipeline.model.device import Batches  # noqa: E402
from pipeline.model.preprocess import Normalizer  # noqa: E402
from stages import ingest, normalize_stats, split  # noqa: E402
from tests.conftest import compose_config  # noqa: E402
from tests.project import ProjectCopy  # noqa: E402

# The stage's runs compared with the hand loop, and their overrides.
STAGE_VARIANTS = {
    "stage, checkpoint each epoch": ["train.checkpoint_every_s=0"],
    "stage, default interval": [],
}
NO_AUGMENT = ["train.augment.rotate=0", "train.augment.translate=0", "train.augment.scale=0"]
# Timestamped log lines, to time the stage's epoch loop from inside the process.
LOG_FORMAT = "hydra.job_logging.formatters.simple.format='%(asctime)s|%(message)s'"
EPOCH_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\|epoch (\d+)/", re.M)


def stage_run(project: ProjectCopy, size: int, epochs: int, *overrides: str) -> tuple[float, float]:
    """(seconds per epoch of the stage's loop, wall seconds of the whole process)."""
    command = [sys.executable, "-m", "stages.train", f"data.image_size={size}",
               f"train.epochs={epochs}", *NO_AUGMENT, LOG_FORMAT, *overrides]  # fmt: skip
    start = time.perf_counter()
    out = subprocess.run(command, cwd=project.root, env=project.env(), capture_output=True,
                         text=True, check=True).stdout  # fmt: skip
    wall = time.perf_counter() - start
    stamps = [datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f") for t, _ in EPOCH_LINE.findall(out)]
    assert len(stamps) == epochs, out[-2000:]
    return (stamps[-1] - stamps[0]).total_seconds() / (epochs - 1), wall


def hand_run(paths: Paths, size: int, epochs: int) -> float:
    """Seconds per epoch of the hand loop (one epoch of warm-up excluded, as for the stage)."""
    cfg = compose_config(f"data.image_size={size}", f"train.epochs={epochs}")
    aug = replace(cfg.train.augment, rotate=0.0, translate=0.0, scale=0.0)
    train_split, valid_split = load_split_images(paths, "train"), load_split_images(paths, "valid")
    device = torch.device("cpu")
    train = Batches.from_numpy(train_split.images, train_split.targets, device)
    valid = Batches.from_numpy(valid_split.images, valid_split.targets, device)
    stats = read_json(paths.normalize, "normalize-stats")
    normalizer = Normalizer.create(stats["mean"], stats["std"], device)

    def timed(n: int) -> float:
        model = new_model("small_cnn", train_split.classes, size, device)
        start = time.perf_counter()
        hand_loop(model, train, valid, replace(cfg.train, epochs=n, augment=aug), normalizer)
        return time.perf_counter() - start

    timed(1)  # warm-up: this process's first training pays for lazy initialisation
    return (timed(epochs) - timed(1)) / (epochs - 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--epochs", type=int, nargs="+", default=[6, 3])
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size, epochs in zip(args.sizes, args.epochs, strict=True):
            project = ProjectCopy.create(Path(tmp) / f"project{size}")
            cfg, paths = compose_config(f"data.image_size={size}"), Paths(project.root)
            for stage in (ingest, split, normalize_stats):
                stage.run(cfg, paths)
            times: dict[str, list[tuple[float, float]]] = {n: [] for n in [*STAGE_VARIANTS, "hand"]}
            for _ in range(args.repeats):
                for name, overrides in STAGE_VARIANTS.items():
                    times[name].append(stage_run(project, size, epochs, *overrides))
                hand = hand_run(paths, size, epochs)
                times["hand"].append((hand, hand * epochs))
            medians = {
                name: tuple(map(statistics.median, zip(*runs, strict=True)))
                for name, runs in times.items()
            }
            rows.append((size, epochs, medians))
    print(f"small_cnn on digits, 1 intra-op thread, no augmentation, median of {args.repeats}; "
          f"ms per epoch (loop) and seconds per run (whole process), hand/stage ratios")  # fmt: skip
    print(f"{'size':>4s} {'epochs':>6s} {'variant':28s} {'ms/epoch':>9s} {'hand/loop':>9s} "
          f"{'process s':>9s} {'hand/process':>12s}")  # fmt: skip
    for size, epochs, medians in rows:
        hand_epoch, hand_run_s = medians["hand"]
        for name, (per_epoch, wall) in medians.items():
            print(f"{size:4d} {epochs:6d} {name:28s} {per_epoch * 1000:9.1f} "
                  f"{hand_epoch / per_epoch:9.3f} {wall:9.1f} {hand_run_s / wall:12.3f}")  # fmt: skip
    print(
        "goal: hand/loop >= 0.95; the process ratio also pays for start-up (imports, "
        "MLflow run, model packaging), a fixed cost"
    )


if __name__ == "__main__":
    main()
