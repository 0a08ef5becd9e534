"""Which CPU trainings give bit-identical weights, and what the adopted setting costs.

Trains the default small_cnn on the 8x8 digits for a few epochs in subprocesses under
OMP_NUM_THREADS=1 and 2, ATEN_CPU_CAPABILITY unset (this CPU's best kernels) / avx2 / default
(no SIMD), and with one or all cores available, both with train.cpu_threads=0 (torch's
default: one thread per core, as before) and with the adopted train.cpu_threads=1. Prints
each run's weight hash and valid metrics, which runs agree bit for bit, the spread of the
metrics (what `dvc metrics diff` shows between such runs), and the epoch time of the
adopted setting against torch's default.

    python benchmarks/determinism.py [--epochs 3]
"""

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# (label, train.cpu_threads, environment, cores the process may use: None = all)
SETTINGS = [
    ("default threads, OMP=1", 0, {"OMP_NUM_THREADS": "1"}, None),
    ("default threads, OMP=2", 0, {"OMP_NUM_THREADS": "2"}, None),
    ("cpu_threads=1, OMP=1", 1, {"OMP_NUM_THREADS": "1"}, None),
    ("cpu_threads=1, OMP=2", 1, {"OMP_NUM_THREADS": "2"}, None),
    ("cpu_threads=1, OMP=2, avx2", 1, {"OMP_NUM_THREADS": "2", "ATEN_CPU_CAPABILITY": "avx2"}, None),
    ("cpu_threads=1, OMP=2, no SIMD", 1, {"OMP_NUM_THREADS": "2", "ATEN_CPU_CAPABILITY": "default"}, None),
    # two threads on one core: is the result set by the thread count alone, not the cores?
    ("cpu_threads=2, one core", 2, {"OMP_NUM_THREADS": "1"}, {0}),
]  # fmt: skip


def prepare(root: Path) -> None:
    from pipeline.core.paths import Paths
    from stages import ingest, normalize_stats, split
    from tests.conftest import compose_config

    cfg, paths = compose_config(), Paths(root)
    for stage in (ingest, split, normalize_stats):
        stage.run(cfg, paths)


def train(root: Path, epochs: int, cpu_threads: int) -> dict:
    """One training as the train stage does it (create_learner + fit); its weights' hash."""
    import torch

    from pipeline.core.paths import Paths
    from pipeline.train.learner import create_learner
    from pipeline.train.loop import fit
    from tests.conftest import compose_config

    cfg = compose_config(f"train.epochs={epochs}", f"train.cpu_threads={cpu_threads}")
    learner = create_learner(cfg, Paths(root), fetch_run_model=None)
    state = fit(
        learner.model, learner.train, learner.valid, cfg.train, learner.normalizer, cfg.seed
    )
    digest = hashlib.sha256()
    for tensor in learner.model.state_dict().values():
        digest.update(tensor.numpy().tobytes())
    last = state.history[-1]
    return {
        "hash": digest.hexdigest()[:12],
        "valid_loss": last.valid_loss,
        "valid_accuracy": last.value("valid_accuracy"),
        # the first epoch pays for lazy initialisation
        "epoch_s": statistics.median(r.epoch_seconds for r in state.history[1:]),
        "threads": torch.get_num_threads(),
        "capability": torch.backends.cpu.get_cpu_capability(),
    }


def run_setting(root: Path, epochs: int, threads: int, env: dict, cores: set | None) -> dict:
    command = [sys.executable, __file__, "--worker", str(root), str(epochs), str(threads)]
    result = subprocess.run(
        command,
        env={**os.environ, "PYTHONWARNINGS": "ignore", **env},
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, cores)) if cores else None,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        root, epochs, threads = args.worker
        print(json.dumps(train(Path(root), int(epochs), int(threads))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        prepare(Path(tmp))
        results = {
            label: run_setting(Path(tmp), args.epochs, threads, env, cores)
            for label, threads, env, cores in SETTINGS
        }
    print(f"small_cnn on 8x8 digits, {args.epochs} epochs, {os.cpu_count()} cores visible")
    print(f"{'setting':32s} {'threads':>7s} {'kernels':>8s} {'weights':>12s} {'valid_loss':>11s} "
          f"{'valid_acc':>9s} {'s/epoch':>8s}")  # fmt: skip
    for label, r in results.items():
        print(f"{label:32s} {r['threads']:7d} {r['capability']:>8s} {r['hash']:>12s} "
              f"{r['valid_loss']:11.6f} {r['valid_accuracy']:9.4f} {r['epoch_s']:8.3f}")  # fmt: skip
    groups: dict[str, list[str]] = {}
    for label, r in results.items():
        groups.setdefault(r["hash"], []).append(label)
    print("bit-identical groups:")
    for labels in groups.values():
        print("  " + " == ".join(labels))
    losses = [r["valid_loss"] for r in results.values()]
    accuracies = [r["valid_accuracy"] for r in results.values()]
    print(f"spread over all settings: valid_loss {max(losses) - min(losses):.2e}, "
          f"valid_accuracy {max(accuracies) - min(accuracies):.4f}")  # fmt: skip
    today, adopted = results["default threads, OMP=2"], results["cpu_threads=1, OMP=2"]
    print(f"epoch time with OMP_NUM_THREADS=2: cpu_threads=1 {adopted['epoch_s']:.3f} s vs torch's "
          f"default ({today['threads']} threads) {today['epoch_s']:.3f} s: "
          f"{adopted['epoch_s'] / today['epoch_s']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
