"""train: fit the configured model on the train split, one MLflow run per trained model.

In a Hydra multirun each job writes its model and metrics into its own job folder, so a
sweep never overwrites the pipeline's tracked outputs.
"""

import logging
from dataclasses import asdict

from pipeline import tracking
from pipeline.config import Config
from pipeline.engine import (
    Batches,
    EpochResult,
    Normalizer,
    fit,
    prepare_model,
    seed_everything,
    select_device,
)
from pipeline.io import read_json, write_csv, write_json
from pipeline.models import ModelSpec, build_model, save_model
from pipeline.paths import ModelFiles, Paths
from pipeline.split import SplitImages, load_split_images
from stages.common import entrypoint, job_dir

log = logging.getLogger("stagewise")


def run(cfg: Config, paths: Paths = Paths(), out: Paths | None = None) -> float:
    """Train; returns the final valid error rate (the value a sweeper minimizes)."""
    out = out or paths
    stats = read_json(paths.normalize, "normalize-stats")
    train, valid = load_split_images(paths, "train"), load_split_images(paths, "valid")
    device = select_device(cfg.train.device)
    seed_everything(cfg.seed)
    spec = model_spec(cfg, train, stats)
    model = prepare_model(build_model(spec), device)
    files = ModelFiles(out.model_dir)
    tags = {"stage": "train", **tracking.environment_tags(str(device)), **data_tags(paths)}
    run_name = f"{spec.arch}-{cfg.train.epochs}ep-lr{cfg.train.lr:g}"
    with tracking.training_run(paths, asdict(cfg), tags, run_name) as run_id:
        tracking.log_split_inputs(paths, run_id, {"train": "training", "valid": "validation"})
        history = fit(
            model,
            Batches.from_numpy(train.images, train.targets, device),
            Batches.from_numpy(valid.images, valid.targets, device),
            cfg.train,
            Normalizer.create(spec.mean, spec.std, device),
            cfg.seed,
            on_epoch=lambda result: tracking.log_metrics(
                paths, run_id, result.metrics(), result.epoch
            ),
        )
        save_model(files, model, spec)
        model_uri = tracking.log_model(paths, run_id, files, example=valid.images[:4])
        write_json(files.run, {"run_id": run_id, "model_uri": model_uri, "epochs": len(history)})
        write_history(out, history)
    final = history[-1]
    log.info(
        "trained %s for %d epochs on %s; MLflow run %s", spec.arch, len(history), device, run_id
    )
    return final.valid_error_rate


def model_spec(cfg: Config, train: SplitImages, stats: dict) -> ModelSpec:
    """The model's architecture, classes, input shape and normalization, saved beside it."""
    _, size, _, channels = train.images.shape
    return ModelSpec(
        arch=cfg.model.arch, classes=train.classes, channels=channels, image_size=size,
        mean=stats["mean"], std=stats["std"], widths=cfg.model.widths, dropout=cfg.model.dropout,
        resize=cfg.data.resize, background=list(cfg.data.background),
    )  # fmt: skip


def write_history(out: Paths, history: list[EpochResult]) -> None:
    """Per-epoch curves for `dvc plots`, and the final epoch's numbers for `dvc metrics`.

    Wall times stay in MLflow only: these files must be identical for identical runs.
    """
    rows = [{"epoch": r.epoch, **r.metrics()} for r in history]
    for row in rows:
        del row["epoch_seconds"]
    write_csv(out.train_history, rows)
    write_json(out.train_metrics, {k: v for k, v in rows[-1].items() if k != "epoch"})


def data_tags(paths: Paths) -> dict[str, str]:
    """DVC-style md5 of the data this model was fitted on, to match the run to dvc.lock."""
    return {
        f"dvc.md5.{path.relative_to(paths.root).as_posix()}": tracking.file_md5(path)
        for path in (paths.manifest, paths.split, paths.normalize)
    }


def main_run(cfg: Config) -> float:
    paths = Paths()
    return run(cfg, paths, Paths(job_dir()))


main = entrypoint(main_run)

if __name__ == "__main__":
    main()
