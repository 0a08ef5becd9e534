"""The GPU check: the whole pipeline with resnet18 at 224 px on generated images, then training
throughput with bf16 + channels_last (what the CUDA path always uses), with and without
train.compile, data on the device vs streamed, and train.devices=auto. Prints one table.

Run through benchmarks/gpu_check.sh (which builds the environment first). Without CUDA it
fails unless given --cpu-dry-run: tiny sizes, the same code paths minus the CUDA-only ones
(bf16 autocast, torch.compile and pinned memory are skipped by the code itself
on the CPU), to check the script end to end on a machine without a GPU.

Steps:
  1. generates --images JPEGs in 10 classes (a class-coloured gradient plus noise, so the
     model has something to learn) and a temporary copy of the project (tests/project.py);
  2. `dvc repro` there: ingest (data=folder, data.image_size), split, normalize-stats, train
     (model=resnet18, train.devices=auto, one epoch), evaluate, test-holdout; wall time and
     the holdout accuracy;
  3. each throughput row trains on that copy's train split with the real loop
     (pipeline.train.loop.train_one_epoch over pipeline.train.learner's model and data, as the
     train stage does): --warmup epochs untimed (torch.compile compiles there), then --epochs
     timed epochs (device synchronized before and after). images/s = images trained / seconds
     (the global batch over all processes for train.devices=auto). A row that fails shows its
     error instead of stopping the check.
"""

import argparse
import os
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline.core.io import read_json  # noqa: E402
from pipeline.core.paths import Paths  # noqa: E402
from pipeline.model.device import compiled  # noqa: E402
from pipeline.train import distributed  # noqa: E402
from pipeline.train.fine_tune import layer_groups, plan  # noqa: E402
from pipeline.train.learner import create_learner  # noqa: E402
from pipeline.train.loop import FitState, one_cycle, steps_per_epoch, train_one_epoch  # noqa: E402
from tests.conftest import compose_config  # noqa: E402
from tests.project import ProjectCopy  # noqa: E402

CLASSES = 10


@dataclass(frozen=True)
class Sizes:
    images: int  # generated JPEGs
    source_px: int  # their side before ingest resizes them
    image_size: int  # data.image_size
    batch_size: int  # train.batch_size (global)
    loader_workers: int  # train.loader_workers when streamed


GPU = Sizes(images=4000, source_px=256, image_size=224, batch_size=256, loader_workers=6)
DRY = Sizes(images=240, source_px=40, image_size=32, batch_size=16, loader_workers=1)


@dataclass(frozen=True)
class Row:
    name: str
    overrides: tuple[str, ...]
    devices: str  # train.devices


ROWS = (
    Row("device data", ("train.data_loading=memory", "train.compile=false"), "1"),
    Row("device data + compile", ("train.data_loading=memory", "train.compile=true"), "1"),
    Row("streamed", ("train.data_loading=stream", "train.compile=false"), "1"),
    Row("streamed + compile", ("train.data_loading=stream", "train.compile=true"), "1"),
    Row("device data, devices=auto", ("train.data_loading=memory", "train.compile=false"), "auto"),
)


def make_jpeg(job: tuple[Path, int, int]) -> None:
    """One image: its class's colour as a gradient, plus noise (so classes are learnable)."""
    path, i, side = job
    rng = np.random.default_rng(i)
    colour = np.random.default_rng(i % CLASSES).uniform(40, 215, 3)
    y, x = np.mgrid[0:side, 0:side] / side
    image = colour + 40 * (x - y)[..., None] + rng.normal(0, 25, (side, side, 3))
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, quality=90)


def generate_images(folder: Path, n: int, side: int) -> None:
    for c in range(CLASSES):
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
    jobs = [(folder / f"class{i % CLASSES}" / f"{i:06d}.jpg", i, side) for i in range(n)]
    with Pool() as pool:
        pool.map(make_jpeg, jobs, chunksize=64)


def pipeline_overrides(images: Path, sizes: Sizes) -> list[str]:
    return [
        "data=folder", f"data.root={images}", f"data.image_size={sizes.image_size}",
        "model=resnet18", f"train.batch_size={sizes.batch_size}",
        f"train.loader_workers={sizes.loader_workers}",
    ]  # fmt: skip


def run_pipeline(project: ProjectCopy, overrides: list[str]) -> tuple[float, str]:
    """`dvc repro` of all six stages in the copy: (wall seconds, the holdout accuracy)."""
    start = time.perf_counter()
    project.compose(*overrides, "train.epochs=1", "train.devices=auto")
    project.run("dvc", "repro")
    seconds = time.perf_counter() - start
    test = read_json(project.root / "metrics" / "test.json", "test-holdout")
    return seconds, f"test accuracy {test['accuracy']:.3f} on {test['images']} images"


def no_fetch(run_id: str, folder: Path):
    raise AssertionError("the check trains from scratch: no run model is fetched")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(root: Path, overrides: list[str], warmup: int, epochs: int) -> dict:
    """Training images/s of this process's loop (each rank runs it; rank 0's is kept)."""
    cfg = compose_config(*overrides)
    learner = create_learner(cfg, Paths(root), no_fetch)
    model, data, device = learner.model, learner.train, learner.device
    groups = layer_groups(model, cfg.train.fine_tune.layer_groups)
    [phase] = plan(cfg.train, len(groups), pretrained=False)
    state = FitState(model, torch.Generator(device=device).manual_seed(cfg.seed), warmup + epochs)
    state.optimizer, state.scheduler = one_cycle(groups, phase, cfg.train, len(data))
    net = compiled(distributed.wrap(model, cfg.train.sync_bn, device), cfg.train.compile, device)
    for _ in range(warmup):
        train_one_epoch(net, data, cfg.train, learner.normalizer, state)
    synchronize(device)
    start = time.perf_counter()
    for _ in range(epochs):
        train_one_epoch(net, data, cfg.train, learner.normalizer, state)
    synchronize(device)
    seconds = time.perf_counter() - start
    images = epochs * steps_per_epoch(len(data), cfg.train.batch_size) * cfg.train.batch_size
    return {
        "images_per_s": images / seconds,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "processes": distributed.world_size(),
        "data": type(data).__name__,
    }


def measure(root: Path, overrides: list[str], row: Row, warmup: int, epochs: int) -> str:
    """One table row's cells after its name: images/s, processes, data class, device."""
    all_overrides = [*overrides, *row.overrides, f"train.devices={row.devices}",
                     f"train.epochs={warmup + epochs}"]  # fmt: skip
    cfg = compose_config(*all_overrides)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    processes = distributed.requested_processes(cfg.train.devices, device)
    try:
        r = distributed.run_distributed(
            throughput, processes, device, root, all_overrides, warmup, epochs
        )
    except Exception as e:  # a row that fails is reported, the others still run
        traceback.print_exc()
        first = (str(e).strip().splitlines() or [""])[0][:120]
        return f"failed: {type(e).__name__}: {first} | | | "
    return f"{r['images_per_s']:.0f} | {r['processes']} | {r['data']} | {r['device']} "


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-dry-run", action="store_true", help="tiny sizes, no CUDA needed")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs per row")
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per row")
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (a temp dir)")
    args = parser.parse_args()
    if not args.cpu_dry_run and not torch.cuda.is_available():
        sys.exit(
            "gpu_check: CUDA is not available to torch "
            f"{torch.__version__} (torch.version.cuda={torch.version.cuda}); this check needs "
            "a GPU. Use --cpu-dry-run to check the script itself on the CPU."
        )
    sizes = DRY if args.cpu_dry_run else GPU
    begin = time.perf_counter()
    table = []
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        images, project = Path(tmp) / "images", ProjectCopy.create(Path(tmp) / "project")
        start = time.perf_counter()
        generate_images(images, sizes.images, sizes.source_px)
        print(f"generated {sizes.images} JPEGs in {time.perf_counter() - start:.1f}s", flush=True)
        overrides = pipeline_overrides(images, sizes)
        seconds, accuracy = run_pipeline(project, overrides)
        print(f"dvc repro: {seconds:.0f}s, {accuracy}", flush=True)
        os.environ.pop("MLFLOW_TRACKING_URI", None)  # the rows below log nothing
        for row in ROWS:
            cells = measure(project.root, overrides, row, args.warmup, args.epochs)
            table.append(f"| {row.name} | {cells}|")
            print(table[-1], flush=True)
    n_train = read_train_size(sizes)
    mode = "CPU dry run (tiny sizes; bf16/compile/pinned memory off)"
    print()
    print(f"## GPU check: {mode if args.cpu_dry_run else 'CUDA'}")
    print()
    print(f"resnet18 at {sizes.image_size} px, {sizes.images} generated images "
          f"(~{n_train} train), global batch {sizes.batch_size}, default augmentation; "
          f"{args.warmup} warm-up + {args.epochs} timed epochs per row; torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}")  # fmt: skip
    print()
    print("| run | images/s | processes | data | device |")
    print("|---|---|---|---|---|")
    print(f"| whole pipeline (dvc repro, 6 stages, 1 epoch, devices=auto) | {seconds:.0f} s wall; "
          f"{accuracy} | | | |")  # fmt: skip
    print("\n".join(table))
    print()
    print(f"check took {time.perf_counter() - begin:.0f}s")


def read_train_size(sizes: Sizes) -> int:
    """The train split's approximate size (split.valid_pct and test_pct of the config)."""
    split = compose_config().split
    return round(sizes.images * (1 - split.valid_pct - split.test_pct))


if __name__ == "__main__":
    main()
