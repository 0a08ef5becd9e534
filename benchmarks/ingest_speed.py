"""ingest throughput and memory on photo-sized JPEGs, measured side by side in one run.

1. Generates --images JPEGs of 500x375 (smooth gradients + noise, ~photo-sized files) in a
   scratch folder, one subfolder per class.
2. Speed: on the first --timing-images files, times (a) a plain single-process loop of
   PIL open + convert("RGB") + resize(64x64), and (b) our ingest (parallel decode with JPEG
   draft mode, sha256 of every file, writing the array store). Prints images/s and the ratio.
3. Memory: runs the real ingest stage function in a fresh process on the first quarter, then
   on all images, and prints each run's peak RSS (main process, and the largest worker).

    python benchmarks/ingest_speed.py [--images 20000] [--timing-images 2000]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZE = 64
CLASSES = 10


def make_jpeg(args: tuple[Path, int]) -> None:
    path, i = args
    rng = np.random.default_rng(i)
    y, x = np.mgrid[0:375, 0:500]
    base = rng.uniform(0, 255, 3)
    image = (
        base
        + 0.3 * x[..., None] * rng.uniform(-1, 1, 3)
        + 0.3 * y[..., None] * rng.uniform(-1, 1, 3)
    )
    image += rng.normal(0, 12, image.shape)
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(path, quality=90)


def generate(folder: Path, n: int) -> list[Path]:
    paths = [folder / f"class{i % CLASSES}" / f"{i:06d}.jpg" for i in range(n)]
    for c in range(CLASSES):
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
    todo = [(p, i) for i, p in enumerate(paths) if not p.exists()]
    with Pool() as pool:
        pool.map(make_jpeg, todo, chunksize=64)
    return paths


def plain_loop(paths: list[Path]) -> float:
    """images/s of the simplest correct single-process decode + resize."""
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            np.asarray(image.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR))
    return len(paths) / (time.perf_counter() - start)


def run_ingest_child(root: Path, out: Path) -> dict:
    """The real ingest stage in a fresh process; its peak RSS and its workers' peak RSS in MB."""
    code = f"""
import json, resource, sys, time
sys.path.insert(0, {str(ROOT)!r})
from hydra import compose, initialize_config_dir
from pathlib import Path
from pipeline.core.paths import Paths
from stages import ingest
from stages.common import validated
with initialize_config_dir(config_dir={str(ROOT / "conf")!r}, version_base=None):
    cfg = validated(compose(config_name="config", overrides=["data=folder", "data.root={root}", "data.image_size={SIZE}"]))
start = time.perf_counter()
ingest.run(cfg, Paths(Path({str(out)!r})))
seconds = time.perf_counter() - start
print(json.dumps({{"seconds": seconds,
    "self_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "workers_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}}))
"""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def subset(folder: Path, paths: list[Path], name: str) -> Path:
    """A folder of symlinks to the first len(paths) files, in the same class layout."""
    target = folder / name
    for path in paths:
        link = target / path.parent.name / path.name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to(path)
    return target


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--timing-images", type=int, default=2000)
    parser.add_argument(
        "--scratch", type=Path, default=None, help="keep generated JPEGs here between runs"
    )
    args = parser.parse_args()
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="ingest-bench-"))
    start = time.perf_counter()
    paths = generate(scratch / "all", args.images)
    mb = sum(p.stat().st_size for p in paths) / 1e6
    print(f"{len(paths)} JPEGs of 500x375, {mb:.0f} MB, generated in {time.perf_counter() - start:.0f}s; "
          f"{os.cpu_count()} CPUs")  # fmt: skip

    timing = paths[: args.timing_images]
    timing_root = subset(scratch, timing, "timing")
    baseline = plain_loop(timing)
    ours = run_ingest_child(timing_root, scratch / "out-timing")
    ours_rate = len(timing) / ours["seconds"]
    print(f"speed on {len(timing)} images: plain PIL loop {baseline:.0f} img/s, ingest {ours_rate:.0f} img/s, "
          f"ratio {ours_rate / baseline:.2f} (goal >= 1.6)")  # fmt: skip

    quarter = subset(scratch, paths[: len(paths) // 4], "quarter")
    for name, root, n in (
        ("quarter", quarter, len(paths) // 4),
        ("all", scratch / "all", len(paths)),
    ):
        result = run_ingest_child(root, scratch / f"out-{name}")
        print(f"peak RSS ingesting {n} images: main {result['self_mb']:.0f} MB, largest worker "
              f"{result['workers_mb']:.0f} MB ({n / result['seconds']:.0f} img/s)")  # fmt: skip


if __name__ == "__main__":
    main()
