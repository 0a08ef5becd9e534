"""Incremental ingest against a full one: --images JPEGs, then 1 % more (--added-pct).

1. Generates --images + added JPEGs of --width x --height (smooth gradients + noise, as
   benchmarks/ingest_speed.py makes them) in a scratch folder, 3 class subfolders; the added
   ones wait in a side folder. Not timed.
2. In a temporary copy of the project (tests/project.py) with params composed for
   data=folder data.root=<the folder> data.image_size=--size, each repeat times
   `python -m stages.ingest` as DVC runs it (a subprocess, wall time; Python start-up and
   imports included):
     full A       outputs deleted, the --images images
     incremental  the added images moved in, ingest again on A's outputs
     full B       outputs deleted, the same --images + added images from nothing
   and checks that the incremental outputs (manifest.parquet, images.npy) are full B's bytes.
   Then the added images go back to the side folder for the next repeat.
3. The same three steps in this process, timing the ingest() call alone (data listing,
   reading + hashing, reuse, decoding, the store; not Python start-up or the manifest write).
Prints each time, the median over --repeats, and incremental / full B (goal: <= 0.10).
The files are in the page cache (just written): a cold cache adds the read of every file to
both runs alike.

    python benchmarks/incremental_ingest.py [--images 20000] [--added-pct 1] [--width 320]
        [--height 240] [--size 64] [--repeats 3] [--scratch DIR]
"""

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core.paths import Paths  # noqa: E402
from pipeline.data.ingest import ingest  # noqa: E402
from pipeline.data.store import write_manifest  # noqa: E402
from tests.conftest import compose_config  # noqa: E402
from tests.project import ProjectCopy  # noqa: E402

CLASSES = 3


def make_jpeg(args: tuple[Path, int, int, int]) -> None:
    path, i, width, height = args
    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:height, 0:width]
    image = (
        rng.uniform(0, 255, 3)
        + 0.3 * x[..., None] * rng.uniform(-1, 1, 3)
        + 0.3 * y[..., None] * rng.uniform(-1, 1, 3)
    )
    image += rng.normal(0, 12, image.shape)
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, quality=90)


def generate(folder: Path, numbers: range, width: int, height: int) -> list[Path]:
    paths = [folder / f"class{i % CLASSES}" / f"{i:06d}.jpg" for i in numbers]
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
    todo = [
        (path, i, width, height)
        for i, path in zip(numbers, paths, strict=True)
        if not path.exists()
    ]
    with Pool() as pool:
        pool.map(make_jpeg, todo, chunksize=64)
    return paths


def move(paths: list[Path], source: Path, target: Path) -> None:
    """Move the files from the source folder to the same place under target."""
    for path in paths:
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, destination)


def outputs(folder: Path) -> tuple[bytes, bytes]:
    paths = Paths(folder)
    return paths.manifest.read_bytes(), paths.images.read_bytes()


def clear(folder: Path) -> None:
    shutil.rmtree(Paths(folder).images.parent, ignore_errors=True)


def stage_run(project: ProjectCopy) -> float:
    """Wall seconds of `python -m stages.ingest` in the project copy."""
    start = time.perf_counter()
    project.run("python", "-m", "stages.ingest")
    return time.perf_counter() - start


def in_process(cfg, folder: Path) -> float:
    """Seconds of the ingest() call into folder (reusing its outputs); the manifest is then
    written as the stage writes it, untimed, for the next run to reuse."""
    paths = Paths(folder)
    start = time.perf_counter()
    result = ingest(cfg.data, paths.images, previous_manifest=paths.manifest)
    seconds = time.perf_counter() - start
    write_manifest(paths.manifest, result.manifest, result.metadata)
    return seconds


def one_repeat(run: Callable[[], float], folder: Path, extras: list[Path], side: Path,
               data: Path) -> dict[str, float]:  # fmt: skip
    """full A, incremental, full B (see the module docstring) in folder's outputs."""
    clear(folder)
    times = {"full A": run()}
    move(extras, side, data)
    times["incremental"] = run()
    incremental = outputs(folder)
    clear(folder)
    times["full B"] = run()
    assert outputs(folder) == incremental, "incremental outputs differ from a full ingest's"
    move([data / path.relative_to(side) for path in extras], data, side)
    return times


def report(name: str, runs: list[dict[str, float]]) -> None:
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    for key, value in median.items():
        each = ", ".join(f"{run[key]:.2f}" for run in runs)
        print(f"  {name:<11} {key:<12} {value:7.2f} s  (runs: {each})")
    ratio = median["incremental"] / median["full B"]
    each = ", ".join(f"{run['incremental'] / run['full B']:.3f}" for run in runs)
    print(f"  {name:<11} incremental / full B = {ratio:.3f} of the medians (goal <= 0.10; each "
          f"repeat: {each}); outputs identical; load average now {os.getloadavg()[0]:.1f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--added-pct", type=float, default=1.0)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--size", type=int, default=64, help="data.image_size")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--scratch", type=Path, default=None, help="keep the images here")
    args = parser.parse_args()
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="incremental-ingest-"))
    data, side = scratch / "data", scratch / "added"
    added = round(args.images * args.added_pct / 100)
    start = time.perf_counter()
    generate(data, range(args.images), args.width, args.height)
    extras = generate(side, range(args.images, args.images + added), args.width, args.height)
    mb = sum(p.stat().st_size for p in data.rglob("*.jpg")) / 1e6
    print(f"{args.images} + {added} JPEGs of {args.width}x{args.height} (quality 90, {mb:.0f} MB),"
          f" {CLASSES} classes, ingested at {args.size}x{args.size} RGB; generated in "
          f"{time.perf_counter() - start:.0f} s; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}")  # fmt: skip

    overrides = ["data=folder", f"data.root={data}", f"data.image_size={args.size}"]
    project_root = scratch / "project"
    shutil.rmtree(project_root, ignore_errors=True)
    project = ProjectCopy.create(project_root)
    project.compose(*overrides)
    runs = [
        one_repeat(lambda: stage_run(project), project.root, extras, side, data)
        for _ in range(args.repeats)
    ]
    report("stage", runs)
    cfg = compose_config(*overrides)
    folder = scratch / "in-process"
    runs = [
        one_repeat(lambda: in_process(cfg, folder), folder, extras, side, data)
        for _ in range(args.repeats)
    ]
    report("ingest()", runs)


if __name__ == "__main__":
    main()
