"""train: fit the configured model on the train split, one MLflow run per trained model.

In a Hydra multirun each job writes its model, metrics and checkpoint into its own job
folder, so a sweep never overwrites the pipeline's tracked outputs.
"""

import logging
from dataclasses import replace
from functools import partial

from pipeline.core.config import Config, config_digest, to_dict
from pipeline.core.io import write_csv, write_json
from pipeline.core.paths import ModelFiles, Paths
from pipeline.data.decode import encode_png
from pipeline.model.device import device_tags, select_device
from pipeline.model.inference import Classifier, predict_logits
from pipeline.model.networks import ModelSpec, save_model
from pipeline.model.predict import predict_files
from pipeline.tasks.heads import MultiLabelHead
from pipeline.tasks.kinds import task_kind
from pipeline.tracking.models import log_model, run_model_files
from pipeline.tracking.reuse import (
    JOB_KEY_TAG,
    REUSED_FROM_TAG,
    finished_run,
    job_key,
    record_reuse,
)
from pipeline.tracking.runs import (
    CONFIG_DIGEST_TAG,
    MetricBuffer,
    Run,
    curve_name,
    end_abandoned_run,
    training_run,
)
from pipeline.tracking.store import check_reachable
from pipeline.train.activation_report import write_activation_report
from pipeline.train.activations import ActivationStats
from pipeline.train.callbacks import Checkpoint, EarlyStopping, KeepBest, OverfitWatch, ReportEpoch
from pipeline.train.checkpoint import checkpoint_run_id, load_checkpoint
from pipeline.train.distributed import (
    check_processes,
    is_main_process,
    requested_processes,
    run_distributed,
    world_size,
)
from pipeline.train.learner import Learner, create_learner, data_tags
from pipeline.train.loop import Callback, EpochResult, fit, overfit_one_batch
from stages.common import check_params, entrypoint, job_dir, sweep_job

log = logging.getLogger("stagewise")


def run(
    cfg: Config,
    paths: Paths = Paths(),
    out: Paths | None = None,
    extra: tuple[Callback, ...] = (),
    extra_tags: dict[str, str] | None = None,
    job: str | None = None,
) -> float | None:
    """Train (in train.devices processes); returns the kept epoch's compare.metric (the value
    a sweeper optimizes). extra callbacks and tags come from stages.tune (one process).
    job names a sweep's job in the log (None outside a sweep): with sweep.reuse, a job whose
    key matches a finished training run reuses it instead of training (reuse below)."""
    device = select_device(cfg.train.device)
    processes = 1 if cfg.train.overfit_one_batch else requested_processes(cfg.train.devices, device)
    check_processes(cfg.train.batch_size, cfg.train.sync_bn, processes, device)
    out = out or paths
    tags = {**(extra_tags or {}), JOB_KEY_TAG: job_key(cfg, paths)}
    reused = reuse(cfg, paths, out, tags, job) if job is not None and cfg.sweep.reuse else None
    if reused is not None:  # (0.0 is a result: a perfect error rate)
        return reused
    return run_distributed(train, processes, device, cfg, paths, out, extra, tags)


def reuse(cfg: Config, paths: Paths, out: Paths, tags: dict[str, str], job: str) -> float | None:
    """A sweep job's result taken from the newest FINISHED training run with its job key, or
    None when there is none (the job trains). The job's child run gets that run's final
    metrics and a reused_from tag; its folder gets only models/run.json, naming both runs
    (the model is the reused run's)."""
    check_metrics(cfg)
    found = finished_run(paths, cfg.tracking.experiment, tags[JOB_KEY_TAG])
    if found is None or cfg.compare.metric not in found.metrics:
        return None
    final = {m: found.metrics[m] for m in task_kind(cfg.task).monitors if m in found.metrics}
    run = record_reuse(paths, to_dict(cfg), tags, run_name(cfg), found.id, final)
    info = {"run_id": run.id, REUSED_FROM_TAG: found.id, "ui_route": run.ui_route()}
    write_json(ModelFiles(out.model_dir).run, info)
    log.info(
        "%s: reusing finished run %s (same config, data and code); set sweep.reuse=false to "
        "train again", job, found.id,
    )  # fmt: skip
    return final[cfg.compare.metric]


def run_name(cfg: Config) -> str:
    return f"{cfg.model.arch}-{cfg.train.epochs}ep-lr{cfg.train.lr:g}"


def train(
    cfg: Config,
    paths: Paths,
    out: Paths,
    extra: tuple[Callback, ...] = (),
    extra_tags: dict[str, str] | None = None,
) -> float | None:
    """One process's training: rank 0 writes the outputs and the MLflow run, the other ranks
    (when train.devices > 1) train in step with it and write nothing."""
    check_metrics(cfg)
    if is_main_process():
        check_reachable(paths)  # before minutes of work, not after them
    learner = create_learner(cfg, paths, partial(run_model_files, paths))
    if cfg.train.overfit_one_batch:
        return sanity_check(cfg, learner)
    tags = {"stage": "train", **device_tags(learner.device), **data_tags(paths, cfg.data)}
    if world_size() > 1:
        tags["train.processes"] = str(world_size())
    identity = config_digest(cfg, data=tags)  # a checkpoint resumes only the same training
    tags[CONFIG_DIGEST_TAG] = config_digest(cfg)  # what the holdout ledger counts
    resume = load_checkpoint(out.checkpoint, identity) if cfg.train.resume else None
    fit_model = partial(
        fit, learner.model, learner.train, learner.valid, cfg.train, learner.normalizer, cfg.seed,
        pretrained=bool(cfg.model.weights), resume=resume, head=learner.head,
    )  # fmt: skip
    if not is_main_process():
        fit_model()
        return None
    if not resume:
        end_checkpoint_run(paths, out)
    with (
        training_run(
            paths,
            to_dict(cfg),
            {**tags, **(extra_tags or {})},
            run_name(cfg),
            resume_run_id=resume and resume["run_id"],
        ) as run,
        MetricBuffer(run) as epochs,
    ):
        if resume:
            relog_lost_epochs(run, resume["history"], epochs)
        else:
            run.log_split_inputs(paths, {"train": "training", "valid": "validation"}, raw=tags)
        inside = ActivationStats(learner.model) if cfg.train.activation_stats else None
        state = fit_model(
            callbacks=callbacks(cfg, run, epochs, Checkpoint(
                out.checkpoint, identity, run.id, cfg.train.checkpoint_every_s
            ), (*extra, *filter(None, [inside]))),
        )  # fmt: skip
        write_activation_report(out.train_activations, inside, learner.model, run)
        check_params()  # minutes have passed: are these still the tracked parameters?
        files = ModelFiles(out.model_dir)
        save_model(files, learner.model, chosen_threshold(cfg, learner))
        example = [encode_png(image) for image in learner.example.numpy()]
        answer = predict_files(Classifier.load(files), example, cfg.data.max_pixels, len(example))
        model_uri = log_model(run, files, example, answer)
        kept = state.best["epoch"] if state.best else state.epoch
        # The kept epoch's numbers as the run's final metrics (the curves are epoch/...):
        # what sweeps and compare rank runs by, as the sweeper's objective does.
        kept_result = state.history[kept - 1]
        kind = task_kind(cfg.task)
        run.log_metrics({m: kept_result.value(m) for m in kind.monitors}, state.epoch)
        info = {"run_id": run.id, "model_uri": model_uri, "epochs": state.epoch}
        write_json(files.run, {**info, "ui_route": run.ui_route()})
        write_history(out, state.history, kept)
    out.checkpoint.unlink(missing_ok=True)  # finished: nothing left to resume
    log.info(
        "trained %s for %d epochs on %s; MLflow run %s",
        cfg.model.arch,
        state.epoch,
        learner.device,
        run.id,
    )
    return objective(state.history[kept - 1], cfg.compare.metric)


def chosen_threshold(cfg: Config, learner: Learner) -> ModelSpec:
    """The model's spec; with eval.choose_threshold (multi-label), holding the threshold with
    the best F1 on the valid split instead of eval.threshold (fastai's way of choosing it)."""
    if not cfg.eval.choose_threshold:
        return learner.spec
    logits = predict_logits(learner.model, learner.valid.images, learner.normalizer, 512)
    threshold = MultiLabelHead.best_threshold(logits, learner.valid.targets.cpu())
    log.info("threshold %g: the best F1 (samples) on the valid split", threshold)
    return replace(learner.spec, threshold=threshold)


def end_checkpoint_run(paths: Paths, out: Paths) -> None:
    """A training that starts over a checkpoint it does not resume ends that checkpoint's run:
    a process killed with SIGKILL (or a crashed machine) left it RUNNING."""
    if (run_id := checkpoint_run_id(out.checkpoint)) and end_abandoned_run(
        paths, run_id, "train restarted without train.resume; its checkpoint was discarded"
    ):
        log.info("MLflow run %s of the interrupted training marked KILLED", run_id)


def objective(result: EpochResult, metric: str) -> float:
    """What a sweeper optimizes: compare.metric of the kept epoch (e.g. valid_error_rate)."""
    return result.value(metric)


def check_metrics(cfg: Config) -> None:
    """The metrics a sweep optimizes and early stopping watches are the task's epoch metrics."""
    kind = task_kind(cfg.task)
    kind.check_monitor("compare.metric", cfg.compare.metric)
    kind.check_monitor("train.early_stopping.monitor", cfg.train.early_stopping.monitor)


def callbacks(
    cfg: Config,
    run: Run,
    epochs: MetricBuffer,
    checkpoint: Checkpoint,
    extra: tuple[Callback, ...] = (),
) -> tuple[Callback, ...]:
    """Report each epoch to MLflow, then the optional parts (and extra: a tune trial's
    pruning), and checkpoint last."""
    stopping = cfg.train.early_stopping
    chosen: list[Callback] = [
        ReportEpoch(lambda r: epochs.log(r.metrics(), r.epoch)),
        OverfitWatch(
            cfg.train.overfit_patience,
            lambda epoch: epochs.set_tags({"overfitting": "true", "overfitting.epoch": epoch}),
        ),
    ]
    if stopping.keep_best:
        chosen.append(KeepBest(stopping.monitor))
    if stopping.patience:
        chosen.append(EarlyStopping(stopping.monitor, stopping.patience))
    return (*chosen, *extra, checkpoint)


def relog_lost_epochs(run: Run, history: list[dict], epochs: MetricBuffer) -> None:
    """Epochs the checkpoint holds but the run lacks: a killed process takes its unwritten
    metric buffer with it."""
    logged = run.logged_steps(curve_name("valid_loss"))
    for row in history:
        if row["epoch"] not in logged:
            epochs.log(EpochResult(**row).metrics(), row["epoch"])


def sanity_check(cfg: Config, learner: Learner) -> None:
    losses = overfit_one_batch(
        learner.model, learner.train, cfg.train, learner.normalizer, cfg.seed, head=learner.head
    )
    log.info(
        "sanity check passed: %s overfit one batch, loss %.3f -> %.4f in %d steps; "
        "nothing was written", cfg.model.arch, losses[0], losses[-1], len(losses),
    )  # fmt: skip


def write_history(out: Paths, history: list[EpochResult], kept: int) -> None:
    """Per-epoch curves for `dvc plots`, and the kept epoch's numbers for `dvc metrics`.

    Wall times stay in MLflow only: these files must be identical for identical runs.
    """
    rows = [{"epoch": r.epoch, **r.metrics()} for r in history]
    for row in rows:
        del row["epoch_seconds"]
    write_csv(out.train_history, rows)
    write_json(out.train_metrics, rows[kept - 1])


def main_run(cfg: Config) -> float | None:
    return run(cfg, Paths(), Paths(job_dir()), job=sweep_job())


main = entrypoint(main_run)

if __name__ == "__main__":
    main()
