"""train: fit the configured model on the train split, one MLflow run per trained model.

In a Hydra multirun each job writes its model and metrics into its own job folder, so a
sweep never overwrites the pipeline's tracked outputs.
"""

from dataclasses import asdict

from pipeline import tracking
from pipeline.config import Config
from pipeline.engine import Batches, Normalizer, fit, prepare_model, seed_everything, select_device
from pipeline.io import read_json, write_csv, write_json
from pipeline.models import ModelSpec, build_model, save_model
from pipeline.paths import ModelFiles, Paths
from pipeline.split import load_split_images
from stages.common import entrypoint, job_dir


def run(cfg: Config, paths: Paths = Paths(), out: Paths | None = None) -> float:
    """Train; returns the final valid error rate (the value a sweeper minimizes)."""
    out = out or paths
    stats = read_json(paths.normalize, "normalize-stats")
    train, valid = load_split_images(paths, "train"), load_split_images(paths, "valid")
    device = select_device(cfg.train.device)
    seed_everything(cfg.seed)
    spec = ModelSpec(
        arch=cfg.model.arch,
        classes=train.classes,
        channels=train.images.shape[-1],
        image_size=train.images.shape[1],
        mean=stats["mean"],
        std=stats["std"],
        widths=cfg.model.widths,
        dropout=cfg.model.dropout,
    )
    model = prepare_model(build_model(spec), device)
    files = ModelFiles(out.model_dir)
    tags = {"stage": "train", **tracking.environment_tags(str(device)), **data_tags(paths)}
    with tracking.training_run(paths, asdict(cfg), tags) as run_id:
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
        write_json(
            files.run, {"run_id": run_id, "model_uri": model_uri, "epochs": cfg.train.epochs}
        )
        write_csv(out.train_history, [{"epoch": r.epoch, **r.metrics()} for r in history])
        final = history[-1]
        write_json(
            out.train_metrics, {**final.metrics(), "seconds": sum(r.seconds for r in history)}
        )
    return final.valid_error_rate


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
