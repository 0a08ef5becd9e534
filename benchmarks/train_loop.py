"""Our fit loop against a minimal hand-written PyTorch loop, and the cost of MLflow logging.

Same model, data, batch size, optimizer and one-cycle schedule, no augmentation, in one
process, alternating the variants so machine noise hits them alike:
  hand     - a bare loop: shuffle, normalize, forward, cross-entropy, backward, step; and an
             evaluation of the valid split after each epoch, as fit does.
  fit      - pipeline.train.loop.fit with no callbacks.
  fit+log  - fit with the train stage's callbacks: per-epoch metrics to a real MLflow store,
             the overfitting watch, and the per-epoch checkpoint.
Prints training images/s of each, the ratios (goal fit/hand >= 0.95) and the MLflow logging
overhead as a share of epoch time (goal <= 2%), plus the checkpoint cost. Runs on CUDA when
one is present (bf16 autocast + channels_last on both sides), else the CPU.

    python benchmarks/train_loop.py [--arch small_cnn] [--size 8] [--epochs 5] [--repeats 3]
"""

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from pipeline.core.paths import Paths  # noqa: E402
from pipeline.data.split import load_split_images  # noqa: E402
from pipeline.model.device import Batches, autocast, prepare_model, select_device  # noqa: E402
from pipeline.model.networks import ModelSpec, build_model  # noqa: E402
from pipeline.model.preprocess import Normalizer  # noqa: E402
from pipeline.tracking.runs import MetricBuffer, Run  # noqa: E402
from pipeline.tracking.store import open_store  # noqa: E402
from pipeline.train.callbacks import Checkpoint, OverfitWatch, ReportEpoch  # noqa: E402
from pipeline.train.loop import fit, steps_per_epoch  # noqa: E402
from stages import ingest, normalize_stats, split  # noqa: E402
from tests.conftest import compose_config  # noqa: E402


def digits(root: Path, size: int):
    cfg = compose_config(f"data.image_size={size}")
    paths = Paths(root)
    for stage in (ingest, split, normalize_stats):
        stage.run(cfg, paths)
    return cfg, paths


def new_model(arch: str, classes: list[str], size: int, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    spec = ModelSpec(
        arch, classes, 1, size, [0.3], [0.37], [32, 64, 128] if arch == "small_cnn" else None, 0.1
    )
    return prepare_model(build_model(spec), device)


def hand_loop(model, train: Batches, valid: Batches, cfg, normalizer: Normalizer) -> None:
    """What a PyTorch user writes by hand: the baseline."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = steps_per_epoch(len(train), cfg.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, cfg.lr, total_steps=cfg.epochs * steps, pct_start=cfg.pct_start
    )
    device = train.device
    for _ in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(train), device=device)
        for step in range(steps):
            idx = order[step * cfg.batch_size : (step + 1) * cfg.batch_size]
            x = normalizer(train.images[idx])
            with autocast(device):
                loss = F.cross_entropy(
                    model(x), train.targets[idx], label_smoothing=cfg.label_smoothing
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        with torch.no_grad(), autocast(device):
            for start in range(0, len(valid), cfg.batch_size * 4):
                model(normalizer(valid.images[start : start + cfg.batch_size * 4]))
        float(loss.detach())  # wait for the device, as fit's per-epoch loss does


def timed(run) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    run()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--arch", default="small_cnn")
    parser.add_argument("--size", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        cfg, paths = digits(Path(tmp), args.size)
        device = select_device("auto")
        train_split, valid_split = (
            load_split_images(paths, "train"),
            load_split_images(paths, "valid"),
        )
        train = Batches.from_numpy(train_split.images, train_split.targets, device)
        valid = Batches.from_numpy(valid_split.images, valid_split.targets, device)
        normalizer = Normalizer.create([0.3], [0.37], device)
        no_aug = replace(cfg.train.augment, rotate=0.0, translate=0.0, scale=0.0, flip=False)
        tcfg = replace(cfg.train, epochs=args.epochs, augment=no_aug)
        classes = train_split.classes
        mlflow_paths = Paths(Path(tmp) / "store")
        store = open_store(mlflow_paths)
        exp = store.experiment_id("benchmark")
        runs = iter(
            [
                Run(store, store.client.create_run(exp).info.run_id)
                for _ in range(3 * (args.repeats + 1))
            ]
        )

        def logged_fit(per_epoch_write: bool, *extra) -> None:
            """fit with the train stage's callbacks; its run is made beforehand, as train's is."""
            run = next(runs)
            with MetricBuffer(run) as buffer:
                if per_epoch_write:
                    report = ReportEpoch(lambda r: run.log_metrics(r.metrics(), r.epoch))
                else:
                    report = ReportEpoch(lambda r: buffer.log(r.metrics(), r.epoch))
                callbacks = (report, OverfitWatch(3, lambda epoch: None), *extra)
                fit(
                    new_model(args.arch, classes, args.size, device),
                    train,
                    valid,
                    tcfg,
                    normalizer,
                    0,
                    callbacks=callbacks,
                )

        checkpoint = Checkpoint(Path(tmp) / "train.pt", "benchmark", "run")
        variants = {
            "hand": lambda: hand_loop(new_model(args.arch, classes, args.size, device), train, valid, tcfg, normalizer),
            "fit": lambda: fit(new_model(args.arch, classes, args.size, device), train, valid, tcfg, normalizer, 0),
            "fit+log": lambda: logged_fit(False),
            "fit+log-each": lambda: logged_fit(True),
            "fit+log+ckpt": lambda: logged_fit(False, checkpoint),
        }  # fmt: skip
        for run in variants.values():  # warm-up: allocator, kernels, lazy imports
            run()
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, run in variants.items():
                times[name].append(timed(run))
    images = args.epochs * steps_per_epoch(len(train), tcfg.batch_size) * tcfg.batch_size
    best = {name: statistics.median(ts) for name, ts in times.items()}
    print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else 'CPU'}), "
          f"{args.arch} on {args.size}x{args.size} digits, {len(train)} train images, "
          f"{args.epochs} epochs, median of {args.repeats}")  # fmt: skip
    for name, seconds in best.items():
        print(
            f"  {name:13s} {images / seconds:9.0f} train images/s  ({seconds / args.epochs * 1000:.1f} ms/epoch)"
        )
    print(f"fit / hand throughput ratio: {best['hand'] / best['fit']:.3f} (goal >= 0.95)")
    print(f"MLflow logging overhead (train's buffered writes): {(best['fit+log'] - best['fit']) / best['fit']:+.1%} "
          f"of epoch time (goal <= 2%); writing every epoch: "
          f"{(best['fit+log-each'] - best['fit']) / best['fit']:+.1%}")  # fmt: skip
    print(
        f"checkpoint each epoch: {(best['fit+log+ckpt'] - best['fit+log']) / best['fit+log']:+.1%} of epoch time"
    )


if __name__ == "__main__":
    main()
