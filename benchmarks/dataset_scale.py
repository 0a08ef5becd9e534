"""What DVC's per-file hashing of the dataset costs at scale: a folder of --images small PNGs.

ingest's DVC deps include the dataset (`${data.root}` and `${data.table}`, the same folder for
data=folder), so DVC hashes every image (md5, remembered in its state database by inode, mtime
and size). This measures, in a temporary copy of the project (tests/project.py) with DVC's
system/global config dirs and site cache dir (its state database) pointed into the scratch
folder, and only `dvc repro ingest` (not the training pipeline after it):

  baseline    the same project with its default data (digits, one file in git): DVC's fixed
              cost of a no-op `dvc repro ingest` and `dvc status`
  in-project  data/raw/scale added with `dvc add`, params composed with
              data=folder data.root=data/raw/scale data.image_size=8 data.channels=1:
              1. `dvc add data/raw/scale` (hashing + copying into the DVC cache)
              2. the first `dvc repro ingest` (DVC's checks + the ingest stage decoding all)
              3. a no-op `dvc repro ingest`, `dvc repro --single-item ingest` (skips checking
                 the upstream data/raw/scale.dvc) and `dvc status`
              4. --added new images, then `dvc repro ingest` (the .dvc file and ingest rerun),
                 and a no-op `dvc repro ingest` after it
  single dep  (with --single-dep) the in-project copy with `- ${data.table}` deleted from
              ingest's deps in the copy's dvc.yaml: the no-ops of 3. and the added images of 4.
              again
  external    (unless --no-external) data.root = the absolute path of the generated folder,
              outside the project, hashed in place: first `dvc repro ingest`, then the no-ops

Every no-op is run --repeats times; the row shows the median run and each run's wall time.
Wall time is time.perf_counter around subprocess.run; CPU time (user + sys) and peak memory
come from GNU `/usr/bin/time -v` around the command, covering its whole process tree (dvc, the
stage it starts, the stage's decode workers). Peak RSS is "Maximum resident set size": the
largest single process of that tree, not their sum. Images are 8x8 greyscale PNGs (--size to
change), 10 class folders, pixels from a seeded RNG (all distinct); generating them and copying
them into the project are not measured. On a shared machine wall times are noisy; CPU time less.

    python benchmarks/dataset_scale.py [--images 100000] [--added 100] [--repeats 3]
        [--single-dep] [--no-external] [--scratch DIR]
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.project import ProjectCopy  # noqa: E402

CLASSES = 10
GNU_TIME = Path("/usr/bin/time")
TABLE_DEP = "      - ${data.table}\n"


def image_path(folder: Path, i: int) -> Path:
    return folder / f"class{i % CLASSES}" / f"{i:07d}.png"


def make_images(args: tuple[Path, list[int], int, int]) -> None:
    folder, indices, size, seed = args
    for i in indices:
        pixels = np.random.default_rng((seed, i)).integers(0, 256, (size, size), dtype=np.uint8)
        Image.fromarray(pixels, mode="L").save(image_path(folder, i))


def generate(folder: Path, start: int, stop: int, size: int, seed: int) -> None:
    """Images start..stop-1 in folder/class<i % 10>/, the same bytes for the same seed."""
    for c in range(CLASSES):
        (folder / f"class{c}").mkdir(parents=True, exist_ok=True)
    todo = [i for i in range(start, stop) if not image_path(folder, i).exists()]
    chunks = [(folder, todo[j : j + 2000], size, seed) for j in range(0, len(todo), 2000)]
    with Pool() as pool:
        pool.map(make_images, chunks)


@dataclass
class Measured:
    seconds: float
    cpu_seconds: float | None  # user + sys of the whole tree; None without GNU time
    rss_mb: float | None  # largest process of the tree; None without GNU time
    output: str


class Bench:
    def __init__(self, project: ProjectCopy, scratch: Path):
        self.project = project
        self.env = project.env()
        dvc_home = scratch / f"dvc-home-{project.root.name}"
        for name in ("DVC_SYSTEM_CONFIG_DIR", "DVC_GLOBAL_CONFIG_DIR", "DVC_SITE_CACHE_DIR"):
            path = dvc_home / name.lower()
            path.mkdir(parents=True, exist_ok=True)
            self.env[name] = str(path)
        self.env["DVC_NO_ANALYTICS"] = "1"
        self.time_file = scratch / f"time-{project.root.name}.txt"

    def run(self, *command: str) -> Measured:
        wrapper = [str(GNU_TIME), "-v", "-o", str(self.time_file)] if GNU_TIME.exists() else []
        start = time.perf_counter()
        result = subprocess.run(
            [*wrapper, *command],
            cwd=self.project.root,
            env=self.env,
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
        output = result.stdout + result.stderr
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed ({result.returncode}):\n{output}")
        if not wrapper:
            return Measured(seconds, None, None, output)
        report = self.time_file.read_text()

        def field(label: str) -> float:
            return float(re.search(rf"{label}: ([\d.]+)", report).group(1))

        cpu = field(r"User time \(seconds\)") + field(r"System time \(seconds\)")
        return Measured(seconds, cpu, field(r"Maximum resident set size \(kbytes\)") / 1024, output)

    def repeated(self, repeats: int, *command: str) -> tuple[Measured, list[float]]:
        """The median run (by wall time) of `repeats` runs, and every run's wall time."""
        runs = [self.run(*command) for _ in range(repeats)]
        return sorted(runs, key=lambda r: r.seconds)[len(runs) // 2], [r.seconds for r in runs]


def ran(measured: Measured) -> list[str]:
    """The stages DVC ran."""
    return [
        line.split("'")[1]
        for line in measured.output.splitlines()
        if line.startswith("Running stage '")
    ]


def row(layout: str, what: str, measured: Measured, times: list[float] | None = None) -> None:
    wall = f"{measured.seconds:.2f}"
    if times and len(times) > 1:
        wall += " (" + ", ".join(f"{t:.2f}" for t in times) + ")"
    cpu = "n/a" if measured.cpu_seconds is None else f"{measured.cpu_seconds:.2f}"
    rss = "n/a" if measured.rss_mb is None else f"{measured.rss_mb:.0f}"
    print(f"{layout:11s} {what:46s} {wall:>25s} {cpu:>8s} {rss:>8s}", flush=True)


def no_ops(bench: Bench, layout: str, repeats: int, single_item: bool = True) -> None:
    commands = [("dvc", "repro", "ingest")]
    if single_item:
        commands.append(("dvc", "repro", "--single-item", "ingest"))
    commands.append(("dvc", "status"))
    for command in commands:
        measured, times = bench.repeated(repeats, *command)
        assert not ran(measured), f"{command} ran {ran(measured)}:\n{measured.output}"
        row(layout, f"no-op {' '.join(command)}", measured, times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--added", type=int, default=100)
    parser.add_argument("--size", type=int, default=8, help="images are size x size greyscale")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-external", action="store_true")
    parser.add_argument("--single-dep", action="store_true")
    parser.add_argument(
        "--scratch", type=Path, default=None, help="work here (kept) instead of a temp dir"
    )
    args = parser.parse_args()
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="dataset-scale-"))
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        measure(args, scratch)
    finally:
        if not args.scratch:
            shutil.rmtree(scratch, ignore_errors=True)


def measure(args: argparse.Namespace, scratch: Path) -> None:
    n = args.images

    from dvc import __version__ as dvc_version

    start = time.perf_counter()
    source = scratch / "images"
    generate(source, 0, n, args.size, args.seed)
    files = sum(1 for _ in source.rglob("*.png"))
    size = sum(p.stat().st_size for p in source.rglob("*.png"))
    print(f"{files} {args.size}x{args.size} greyscale PNGs ({size / files:.0f} bytes each) in "
          f"{CLASSES} class folders, generated in {time.perf_counter() - start:.0f} s; "
          f"{os.cpu_count()} CPUs; dvc {dvc_version}; scratch {scratch}")  # fmt: skip
    dvc_yaml = (ROOT / "dvc.yaml").read_text()
    ingest_stage = dvc_yaml[dvc_yaml.index("  ingest:") : dvc_yaml.index("  split:")]
    print(f"ingest's outputs in this tree's dvc.yaml: persist: {'persist: true' in ingest_stage}")
    overrides = (f"data.image_size={args.size}", "data.channels=1")
    print(f"{'layout':11s} {'command':46s} {'wall s (runs)':>25s} {'CPU s':>8s} {'RSS MB':>8s}")

    project = ProjectCopy.create(fresh(scratch / "project"))
    bench = Bench(project, scratch)
    bench.run("dvc", "repro", "ingest")  # digits
    no_ops(bench, "baseline", args.repeats, single_item=False)

    shutil.copytree(source, project.root / "data" / "raw" / "scale")
    row("in-project", "dvc add data/raw/scale", bench.run("dvc", "add", "data/raw/scale"))
    project.compose("data=folder", "data.root=data/raw/scale", *overrides)
    first = bench.run("dvc", "repro", "ingest")
    assert ran(first) == ["ingest"], first.output
    row("in-project", "first dvc repro ingest", first)
    no_ops(bench, "in-project", args.repeats)
    add_images(bench, "in-project", n, args)
    measured, times = bench.repeated(args.repeats, "dvc", "repro", "ingest")
    assert not ran(measured), measured.output
    row("in-project", "no-op dvc repro ingest after the add", measured, times)

    if args.single_dep:
        dvc_yaml_copy = project.root / "dvc.yaml"
        text = dvc_yaml_copy.read_text()
        assert text.count(TABLE_DEP) == 1, "dvc.yaml's ingest has no single `- ${data.table}` dep"
        dvc_yaml_copy.write_text(text.replace(TABLE_DEP, ""))
        measured = bench.run("dvc", "repro", "ingest")
        row(
            "single dep",
            f"dvc repro ingest (ran: {', '.join(ran(measured)) or 'nothing'})",
            measured,
        )
        no_ops(bench, "single dep", args.repeats)
        add_images(bench, "single dep", n + args.added, args)

    if not args.no_external:
        external = ProjectCopy.create(fresh(scratch / "project-external"))
        ext_bench = Bench(external, scratch)
        external.compose("data=folder", f"data.root={source}", *overrides)
        first = ext_bench.run("dvc", "repro", "ingest")
        assert ran(first) == ["ingest"], first.output
        row("external", "first dvc repro ingest (md5 of every file)", first)
        no_ops(ext_bench, "external", args.repeats, single_item=False)


def add_images(bench: Bench, layout: str, start: int, args: argparse.Namespace) -> None:
    """Add args.added images to the in-project folder and time the `dvc repro ingest` after."""
    folder = bench.project.root / "data" / "raw" / "scale"
    generate(folder, start, start + args.added, args.size, args.seed)
    rerun = bench.run("dvc", "repro", "ingest")
    assert "ingest" in ran(rerun), rerun.output
    decoded = re.search(r"\((\d+) decoded, (\d+) reused\)", rerun.output)
    counts = f" ({decoded.group(1)} decoded)" if decoded else ""
    row(layout, f"+{args.added} images: dvc repro ingest{counts}", rerun)


def fresh(folder: Path) -> Path:
    shutil.rmtree(folder, ignore_errors=True)
    return folder


if __name__ == "__main__":
    main()
