"""DDP on the CPU: epoch time of 2 gloo processes against 1, data in memory and streamed.

Writes a random uint8 RGB array store, then trains small_cnn with the default augmentation
(pipeline.train.loop.fit, 1 intra-op thread per process, the same global batch) through
pipeline.train.distributed.run_distributed with 1 and 2 processes. Prints each variant's
median epoch time (train pass + valid pass) over the epochs after the first, the 2/1 ratio, and
rank 0's CPU seconds for the whole fit (the work one process does, steadier than wall time on a
shared machine).
On a 2-core machine 2 processes cannot be faster; the figure shows what the multi-process path
costs (gradient all-reduce, each process evaluating the valid split).

    python benchmarks/ddp_epoch.py [--n 1024] [--size 32] [--epochs 3] [--loading memory stream]
"""

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from pipeline.data.split import SplitRows  # noqa: E402
from pipeline.model.networks import ModelSpec, build_model  # noqa: E402
from pipeline.model.preprocess import Normalizer  # noqa: E402
from pipeline.model.streaming import split_data  # noqa: E402
from pipeline.train.distributed import run_distributed  # noqa: E402
from pipeline.train.loop import fit  # noqa: E402
from tests.conftest import compose_config  # noqa: E402

CLASSES = 10
BATCH = 64
CPU = torch.device("cpu")


def write_store(path: Path, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    np.save(path, rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))


def epoch_seconds(
    store: Path, loading: str, workers: int, epochs: int
) -> tuple[list[float], float]:
    """(each epoch's wall seconds, the process's CPU seconds) of fit on the store, in every
    process; rank 0's are returned. With one thread per process the CPU seconds are the work
    a process did, which the machine's other load does not inflate as it does wall time."""
    torch.set_num_threads(1)
    shape = np.load(store, mmap_mode="r").shape
    targets = np.arange(shape[0], dtype=np.int64) % CLASSES
    n_valid = shape[0] // 8

    def rows(idx: np.ndarray):
        rows_ = SplitRows(
            idx, idx, targets[idx], [str(c) for c in range(CLASSES)], store, shape[1:]
        )
        return split_data(rows_, CPU, in_memory=loading == "memory", workers=workers)

    train, valid = rows(np.arange(n_valid, shape[0])), rows(np.arange(n_valid))
    cfg = compose_config(f"train.epochs={epochs}", f"train.batch_size={BATCH}").train
    torch.manual_seed(0)
    spec = ModelSpec("small_cnn", [str(c) for c in range(CLASSES)], 3, shape[1], [0.5] * 3,
                     [0.29] * 3, widths=[16, 32], dropout=0.0)  # fmt: skip
    cpu = time.process_time()
    state = fit(
        build_model(spec), train, valid, cfg, Normalizer.create(spec.mean, spec.std, CPU), 0
    )
    return [r.epoch_seconds for r in state.history], time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024, help="images in the store")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--loading", nargs="+", default=["memory", "stream"])
    parser.add_argument("--workers", type=int, default=1, help="loader workers when streamed")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "images.npy"
        write_store(store, args.n, args.size)
        print(f"{args.n} random {args.size} px RGB images, small_cnn, global batch {BATCH}, "
              f"default augmentation, 1 thread per process, {args.epochs} epochs")  # fmt: skip
        for loading in args.loading:
            median = {}
            for processes in (1, 2):
                seconds, cpu = run_distributed(
                    epoch_seconds, processes, CPU, store, loading, args.workers, args.epochs
                )
                median[processes] = statistics.median(seconds[1:] or seconds)
                print(f"{loading:6s} {processes} process(es): median epoch {median[processes]:.3f} s, "
                      f"rank 0 fit CPU {cpu:.2f} s"
                      f"  (epochs: {' '.join(f'{s:.3f}' for s in seconds)})")  # fmt: skip
            print(f"{loading:6s} 2 / 1 processes epoch time: {median[2] / median[1]:.2f}")


if __name__ == "__main__":
    main()
