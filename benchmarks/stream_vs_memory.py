"""Streamed training (batches read from the memory-mapped array store by DataLoader workers)
against in-memory training: throughput, peak memory, and how reading scales with workers.

Writes a random uint8 RGB array store, then runs each variant in its own process (so each
peak-memory figure is that variant's alone), one after another:
  memory     - the split read whole into RAM (train.data_loading=memory)
  stream/wN  - streamed with N loader workers (train.data_loading=stream, loader_workers=N)
For each: training images/s over `--epochs` epochs of pipeline.train.loop.fit (small_cnn,
no augmentation, CUDA when present, else the CPU with 1 thread), the images/s of reading
the batches alone (no model: the loader's own ceiling), and the training process's peak
resident memory above its baseline after the imports (VmHWM - VmRSS), and of its anonymous
memory alone (RssAnon sampled every 20 ms: what the process must hold). VmHWM also counts the
clean file pages of the memory map a process touched: the page cache, which the kernel drops
under memory pressure, so for stream/w0 it overstates what must fit. The workers' largest
ru_maxrss is shown apart (it includes pages shared with the parent they forked from).
--epochs 0 measures the reading alone (quick, also for large stores).

    python benchmarks/stream_vs_memory.py                # 4000 images of 64 px (~49 MB)
    python benchmarks/stream_vs_memory.py --large        # 40000 images of 224 px (~6 GB)
    python benchmarks/stream_vs_memory.py --large --train-images 2048   # train on a share
    python benchmarks/stream_vs_memory.py --n 8000 --size 96 --workers 0 1 2 4
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

CLASSES = 10
BATCH = 64


def write_store(path: Path, n: int, size: int) -> None:
    """Random images, written in chunks (never the whole array in memory)."""
    store = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, size, size, 3))
    rng = np.random.default_rng(0)
    for start in range(0, n, 1000):
        stop = min(start + 1000, n)
        store[start:stop] = rng.integers(0, 256, (stop - start, size, size, 3), dtype=np.uint8)
    store.flush()
    del store


def status_mb(key: str) -> float:
    """A memory figure of this process from /proc/self/status (VmRSS, VmHWM...), in MB."""
    lines = Path("/proc/self/status").read_text().splitlines()
    return next(int(line.split()[1]) for line in lines if line.startswith(key + ":")) / 1024


class AnonPeak:
    """The peak of this process's anonymous memory (RssAnon: its own allocations, not the
    page cache of the memory-mapped store, which VmHWM also counts), sampled every 20 ms."""

    def __init__(self) -> None:
        import threading

        self.peak = status_mb("RssAnon")
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self) -> None:
        while not self.done.wait(0.02):
            self.peak = max(self.peak, status_mb("RssAnon"))

    def stop(self) -> float:
        self.done.set()
        self.thread.join()
        return max(self.peak, status_mb("RssAnon"))


def child(store: Path, mode: str, workers: int, epochs: int, train_images: int) -> dict:
    """One variant, in this process: what the parent prints."""
    import torch

    # Loaded before the baseline is read, so it counts the code and not the data path.
    import pipeline.train.loop  # noqa: F401
    import tests.conftest  # noqa: F401
    from pipeline.core.config import DataLoading
    from pipeline.data.split import SplitRows
    from pipeline.model.device import select_device, set_cpu_threads
    from pipeline.model.streaming import keep_in_memory, split_data

    device = select_device("auto")
    set_cpu_threads(1, device)
    shape = np.load(store, mmap_mode="r").shape
    n = shape[0]
    n_valid = min(512, n // 10)
    targets = np.arange(n, dtype=np.int64) % CLASSES

    def rows(idx: np.ndarray) -> SplitRows:
        return SplitRows(idx, idx, targets[idx], [str(c) for c in range(CLASSES)], store, shape[1:])

    base = status_mb("VmRSS")  # after the imports: what every variant holds anyway
    base_anon, anon = status_mb("RssAnon"), AnonPeak()
    train_rows, valid_rows = rows(np.arange(n_valid, n)), rows(np.arange(n_valid))
    in_memory = keep_in_memory(DataLoading(mode), 0)
    train = split_data(train_rows, device, in_memory, workers)
    valid = split_data(valid_rows, device, in_memory, workers)

    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))
    batches = order[: len(train) // BATCH * BATCH].split(BATCH)
    start = time.perf_counter()
    for images, _ in train.iterate(batches):
        images.sum()  # touch the batch, as training would
    read_per_s = len(batches) * BATCH / (time.perf_counter() - start)
    result = {"read_per_s": read_per_s, "train_per_s": float("nan"), "device": str(device)}
    if epochs:
        if train_images:  # a share of the split, read the same way (large stores train slowly)
            train = split_data(rows(np.arange(n_valid, n_valid + train_images)), device,
                               in_memory, workers)  # fmt: skip
        result["train_per_s"] = train_throughput(train, valid, shape, epochs, device)
    return {
        **result,
        "peak_over_base_mb": status_mb("VmHWM") - base,
        "anon_peak_over_base_mb": anon.stop() - base_anon,
        "base_mb": base,
        "workers_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def train_throughput(train, valid, shape: tuple[int, ...], epochs: int, device) -> float:
    """Training images/s of fit over the streamed or in-memory splits."""
    import torch

    from pipeline.model.device import prepare_model
    from pipeline.model.networks import ModelSpec, build_model
    from pipeline.model.preprocess import Normalizer
    from pipeline.train.loop import fit
    from tests.conftest import compose_config

    cfg = compose_config(
        f"train.epochs={epochs}", f"train.batch_size={BATCH}", "train.augment.rotate=0",
        "train.augment.translate=0", "train.augment.scale=0",
    ).train  # fmt: skip
    torch.manual_seed(0)
    spec = ModelSpec("small_cnn", [str(c) for c in range(CLASSES)], 3, shape[1], [0.5] * 3,
                     [0.29] * 3, widths=[16, 32], dropout=0.0)  # fmt: skip
    model = prepare_model(build_model(spec), device)
    normalizer = Normalizer.create(spec.mean, spec.std, device)
    state = fit(model, train, valid, cfg, normalizer, seed=0)
    seconds = sum(r.epoch_seconds for r in state.history)
    return epochs * (len(train) // BATCH) * BATCH / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="images in the store")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--large", action="store_true", help="40000 images of 224 px (~6 GB)")
    parser.add_argument("--epochs", type=int, default=1, help="0 = read the batches only")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--dir", type=Path, default=None, help="where the store goes (a temp dir)")
    parser.add_argument("--train-images", type=int, default=0,
                        help="train on the first K train images only (0 = all; reading and "
                        "memory are still measured over the whole split)")  # fmt: skip
    parser.add_argument("--child", nargs=5, metavar=("STORE", "MODE", "WORKERS", "EPOCHS", "K"))
    args = parser.parse_args()
    if args.child:
        store, mode, workers, epochs, train_images = args.child
        print(json.dumps(child(Path(store), mode, int(workers), int(epochs), int(train_images))))
        return
    n, size = (40_000, 224) if args.large else (args.n, args.size)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        store = Path(tmp) / "images.npy"
        start = time.perf_counter()
        write_store(store, n, size)
        print(f"store: {n} x {size}x{size}x3 uint8 = {n * size * size * 3 / 1e6:.0f} MB, "
              f"written in {time.perf_counter() - start:.1f}s")  # fmt: skip
        variants = [("memory", 0)] + [("stream", w) for w in args.workers]
        results = {}
        for mode, workers in variants:
            command = [sys.executable, __file__, "--child", str(store), mode, str(workers)]
            out = subprocess.run(
                [*command, str(args.epochs), str(args.train_images)],
                capture_output=True,
                text=True,
                check=True,
            )
            r = results[(mode, workers)] = json.loads(out.stdout.strip().splitlines()[-1])
            name = "memory" if mode == "memory" else f"stream/w{workers}"
            print(f"{name:10s} train {r['train_per_s']:8.0f} img/s  read {r['read_per_s']:8.0f} "
                  f"img/s  peak RSS over base {r['peak_over_base_mb']:6.0f} MB "
                  f"(anonymous {r['anon_peak_over_base_mb']:6.0f} MB) "
                  f"(base {r['base_mb']:.0f} MB; workers' ru_maxrss {r['workers_peak_mb']:.0f} MB)  [{r['device']}]")  # fmt: skip
        memory = results[("memory", 0)]["train_per_s"]
        for mode, workers in variants[1:]:
            ratio = results[(mode, workers)]["train_per_s"] / memory
            print(f"stream/w{workers} / memory training throughput: {ratio:.2f}")


if __name__ == "__main__":
    main()
