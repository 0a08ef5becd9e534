"""tune: an Optuna search over training settings (tune.space), pruning hopeless trials.

    python -m stages.tune [tune.trials=32] [tune.pruner=hyperband] [tune.study=wide-lr]

Each trial trains as a sweep job does, into multirun/tune/<study>/trial-<n>/ (never the DVC
outputs), as an MLflow child run of the study's parent run, and is scored by compare.metric of
its kept epoch. The study lives in an RDB storage (tune.storage): rerun the command to resume a
killed search, or run it several times at once (processes, SLURM jobs) to share one study.
Not a DVC stage: its trials reuse the pipeline's data, and the winner is trained by
`dvc exp run -S train.lr=...`.
"""

import difflib
import json
import logging
import math
import os
import signal
import sys
from functools import partial
from typing import Any

from omegaconf import OmegaConf

from pipeline.core.config import Config, to_dict
from pipeline.core.errors import StagewiseError
from pipeline.core.io import read_json
from pipeline.core.paths import ModelFiles, Paths
from pipeline.model.device import select_device
from pipeline.tracking.reuse import PRUNED_TAG
from pipeline.tracking.runs import SWEEP_RUN_ENV, Run, flatten
from pipeline.tracking.store import check_reachable, open_store
from pipeline.tracking.sweeps import reattach_sweep, start_sweep
from pipeline.train import tune
from pipeline.train.distributed import requested_processes
from stages import train
from stages.common import entrypoint, validated

log = logging.getLogger("stagewise")


def run(cfg: Config, paths: Paths = Paths()) -> float | None:
    """Run trials until tune.trials of the study's are finished; returns the best value."""
    space = tune.search_space(cfg.tune.space)
    check(cfg, space)
    check_reachable(paths)
    lock = tune.study_lock(paths, cfg.tune.study)
    with lock:
        study = tune.open_study(cfg.tune, paths, cfg.compare.metric)
        parent = parent_run(paths, cfg, study)
    os.environ[SWEEP_RUN_ENV] = parent.id  # each trial's training run becomes its child
    started: list[int] = []  # this worker's trials
    status = "KILLED"  # Ctrl-C, SIGTERM
    try:
        tune.run_trials(
            study,
            cfg.tune.trials,
            partial(objective, cfg, paths, space, started),
            lock,
            poll_s=min(5, cfg.tune.heartbeat_s),
            max_failed=cfg.tune.max_failed_trials,
        )
        status = "FINISHED"
    except Exception:
        status = "FAILED"
        raise
    finally:
        os.environ.pop(SWEEP_RUN_ENV, None)
        end_parent(parent, study, started, status, cfg.compare.metric)
    best = tune.best_trial(study)
    return best.value if best else None


def check(cfg: Config, space: dict[str, dict[str, Any]]) -> None:
    """What would fail a trial, refused before the first one."""
    train.check_metrics(cfg)
    tune.check_study_name(cfg.tune.study)
    if cfg.tune.trials < 1:
        raise StagewiseError(f"tune.trials={cfg.tune.trials}: run at least one trial")
    if cfg.tune.max_failed_trials < 1:
        raise StagewiseError(
            f"tune.max_failed_trials={cfg.tune.max_failed_trials}: must be at least 1"
        )
    if cfg.train.overfit_one_batch or (
        requested_processes(cfg.train.devices, select_device(cfg.train.device)) != 1
    ):
        raise StagewiseError(
            "stages.tune trains each trial in one process without overfit_one_batch: set "
            "train.devices=1 and run one tune worker per GPU (CUDA_VISIBLE_DEVICES) instead"
        )
    known = flatten(to_dict(cfg))
    for key, spec in space.items():
        check_key(key, known)
        for name, value in tune.extremes(spec):  # through the schema's checks (types, ranges)
            try:
                with_params(cfg, {key: value})
            except StagewiseError as e:
                raise StagewiseError(
                    f"tune.space.{key}: {name} {value!r} is refused: {e}"
                ) from None


def check_key(key: str, known: dict[str, str]) -> None:
    """A key that a trial may set: one of the config's, and not one the pipeline's data
    depends on."""
    if key.split(".")[0] in ("data", "split", "tune"):
        raise StagewiseError(
            f"tune.space.{key}: a tune reuses the ingested data and split, so it cannot "
            "search data.*, split.* or tune.*; use DVC experiments for those"
        )
    if key not in known:
        close = difflib.get_close_matches(key, list(known), n=1)
        hint = f"did you mean {close[0]}?" if close else "see conf/ for the keys"
        raise StagewiseError(f"tune.space.{key}: {key} is not a config key; {hint}")


def with_params(cfg: Config, params: dict[str, Any]) -> Config:
    """cfg with a trial's values, checked as a command line's overrides are."""
    conf = OmegaConf.create(to_dict(cfg))  # untyped: validated() names a mistyped value
    for key, value in params.items():
        OmegaConf.update(conf, key, value)
    return validated(conf)


def objective(
    cfg: Config, paths: Paths, space: dict[str, dict[str, Any]], started: list[int], trial: Any
) -> float:
    """One trial: train with its values, reporting each epoch to the pruner (or reuse a
    finished training run with the same values: stages.train.reuse)."""
    started.append(trial.number)
    params = tune.suggest(trial, space)
    log.info("trial %d: %s", trial.number, " ".join(f"{k}={v}" for k, v in params.items()))
    out = Paths(tune.trial_dir(paths, cfg.tune.study, trial.number))
    pruning = tune.ReportToTrial(trial, cfg.compare.metric)
    tags = {"tune.study": cfg.tune.study, "tune.trial": str(trial.number)}
    value = train.run(
        with_params(cfg, params), paths, out, (pruning,), tags, f"trial {trial.number}"
    )
    run_id = read_json(ModelFiles(out.model_dir).run, "train")["run_id"]
    trial.set_user_attr(tune.TRIAL_RUN, run_id)
    run = Run(open_store(paths), run_id)
    if pruning.pruned_at is not None:
        run.set_tags({PRUNED_TAG: "true", "tune.pruned_epoch": pruning.pruned_at})
    pruning.raise_if_pruned()
    return finite(value, cfg.compare.metric, run)


def finite(value: float | None, metric: str, run: Run) -> float:
    """The trial's value; NaN or inf fails the trial and its training run. Optuna would fail
    the trial by itself, but the run would stay FINISHED, and sweep.reuse would then hand
    its NaN to every later trial with the same values."""
    if value is not None and math.isfinite(value):
        return value
    reason = f"{metric} is {value}, which no search can rank (did the training diverge?)"
    run.set_tags({"error": reason})
    run.end("FAILED")
    raise StagewiseError(reason)


def parent_run(paths: Paths, cfg: Config, study: Any) -> Run:
    """The study's MLflow parent run: made by its first worker, its id kept in the study so
    that every later worker (a resume, a parallel one) attaches to it."""
    if run_id := study.user_attrs.get(tune.PARENT_RUN):
        return reattach_sweep(paths, run_id)
    parent = start_sweep(
        paths,
        cfg.tracking.experiment,
        [f"tune.study={cfg.tune.study}"],
        name=f"tune {cfg.tune.study}",
        tags={"tune.study": cfg.tune.study, "tune.space": json.dumps(cfg.tune.space)},
    )
    study.set_user_attr(tune.PARENT_RUN, parent.id)
    return parent


def end_parent(parent: Run, study: Any, started: list[int], status: str, metric: str) -> None:
    """Summarize the study on its parent run and end it, unless other workers still run
    trials (the last one to stop ends it; a resume reopens it)."""
    trials = study.get_trials(deepcopy=False)
    if any(t.state.name == "RUNNING" and t.number not in started for t in trials):
        return
    n = tune.counts(study)
    summary = {
        "trials": n["complete"] + n["pruned"],
        "pruned_trials": n["pruned"],
        "failed_trials": n["fail"],
    }
    if best := tune.best_trial(study):
        summary[f"best_{metric}"] = best.value
        parent.set_tags(
            {
                "sweep.best_run_id": best.user_attrs.get(tune.TRIAL_RUN, ""),
                "tune.best_trial": best.number,
            }
        )
    parent.log_metrics(summary)
    parent.end(status)
    log.info("study %s: %s (%s)", study.study_name, summary, status)


def main_run(cfg: Config) -> float | None:
    """run(), with Ctrl-C as one line and 128 + SIGINT as the exit status (SIGTERM's is
    128 + SIGTERM: stages.common), not Optuna's and Python's tracebacks."""
    try:
        return run(cfg)
    except KeyboardInterrupt:
        log.error(
            "interrupted: study %s keeps its finished trials; run the same command again to "
            "resume it",
            cfg.tune.study,
        )
        sys.exit(128 + signal.SIGINT)


main = entrypoint(main_run)

if __name__ == "__main__":
    main()
