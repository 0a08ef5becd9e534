"""A hyperparameter search with Optuna (stages.tune): the search space, the study in an RDB
storage that every worker shares, the budget of trials, and per-epoch pruning.

Several workers (processes, SLURM jobs) run the same command on one study: Optuna's storage
hands out trial numbers and keeps the results; each worker's heartbeat lets the others fail
(and retry) a trial whose worker died. What Optuna lacks is a budget that counts every
worker's trials exactly (its MaxTrialsCallback lets N workers overshoot by up to N-1) and a
one-time set-up per study (the MLflow parent run): both are done under a lock file beside the
project's MLflow store, which all workers see.
"""

import contextlib
import logging
import math
import re
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
from filelock import FileLock
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback, fail_stale_trials
from optuna.trial import Trial, TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from pipeline.core.config import Pruner, TuneConfig
from pipeline.core.direction import optimization_direction
from pipeline.core.errors import StagewiseError, first_line
from pipeline.core.paths import Paths
from pipeline.train.loop import Callback, FitState

log = logging.getLogger("stagewise")

RANGE = {"low", "high", "log", "step"}
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# User attributes of the study and of its trials.
PARENT_RUN = "mlflow_parent_run_id"
WORKERS = "workers"
TRIAL_RUN = "mlflow_run_id"
# sqlite lets one writer in at a time: wait for the lock rather than fail a trial.
# PostgreSQL: a host that does not answer fails in seconds, not after the OS's TCP timeout.
CONNECT_ARGS = {"sqlite": {"timeout": 60}, "postgresql+psycopg2": {"connect_timeout": 10}}
# A study's name becomes a folder (multirun/tune/<study>) and a lock file's name.
STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_study_name(name: str) -> None:
    if not STUDY_NAME.fullmatch(name):
        raise StagewiseError(
            f"tune.study={name}: name a study with letters, digits, '-', '_' and '.' (starting "
            "with a letter or digit): it names its folder multirun/tune/<study>"
        )


def search_space(space: dict[str, Any], prefix: str = "") -> dict[str, dict[str, Any]]:
    """tune.space as {dotted config key: its range or choices}, nested keys flattened."""
    found = {}
    for key, spec in space.items():
        name = f"{prefix}{key}"
        if not isinstance(spec, dict) or not spec:
            raise StagewiseError(
                f"tune.space.{name}: give {{low: ..., high: ...}} or {{choices: [...]}}, "
                f"not {spec!r}"
            )
        if spec.keys() & (RANGE | {"choices"}):
            found[name] = checked_dimension(name, spec)
        else:
            found.update(search_space(spec, f"{name}."))
    return found


def checked_dimension(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    if "choices" in spec:
        choices = spec["choices"]
        if set(spec) != {"choices"} or not isinstance(choices, list) or not choices:
            raise StagewiseError(f"tune.space.{name}: give choices alone, as a non-empty list")
        if not all(isinstance(c, bool | int | float | str) or c is None for c in choices):
            raise StagewiseError(
                f"tune.space.{name}: choices must be numbers, strings, booleans or null"
            )
        return spec
    if unknown := sorted(spec.keys() - RANGE):
        raise StagewiseError(
            f"tune.space.{name}: unknown {', '.join(unknown)}; use low, high, log, step or choices"
        )
    low, high = spec.get("low"), spec.get("high")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
        raise StagewiseError(f"tune.space.{name}: low and high must both be numbers")
    if not low < high or (spec.get("log") and low <= 0):
        raise StagewiseError(f"tune.space.{name}: need low < high (and low > 0 with log)")
    return spec


def extremes(spec: dict[str, Any]) -> list[tuple[str, Any]]:
    """The values of a dimension that bound all the others it may give a trial, named: its
    low and high ends, or each of its choices."""
    if "choices" in spec:
        return [("choice", choice) for choice in spec["choices"]]
    return [("low", spec["low"]), ("high", spec["high"])]


def suggest(trial: Trial, space: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The trial's values: ints when both bounds are ints, else floats, or one of the choices."""
    params = {}
    for key, spec in space.items():
        if "choices" in spec:
            params[key] = trial.suggest_categorical(key, spec["choices"])
        elif isinstance(spec["low"], int) and isinstance(spec["high"], int):
            params[key] = trial.suggest_int(
                key, spec["low"], spec["high"], step=spec.get("step", 1), log=spec.get("log", False)
            )
        else:
            params[key] = trial.suggest_float(
                key, spec["low"], spec["high"], step=spec.get("step"), log=spec.get("log", False)
            )
    return params


def storage_url(cfg: TuneConfig, paths: Paths) -> str:
    if cfg.storage is None:
        paths.mlruns.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{paths.mlruns / 'optuna.db'}"
    try:
        url = make_url(cfg.storage)
    except ArgumentError:
        raise StagewiseError(
            f"tune.storage={cfg.storage}: not a database URL (e.g. postgresql://user@host/optuna)"
        ) from None
    if url.password:
        raise StagewiseError(
            "tune.storage: keep the password out of the URL (the config is logged to MLflow); "
            "set PGPASSWORD or use ~/.pgpass"
        )
    if url.drivername == "postgresql":
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, which is not installed: the
        # project has psycopg2 (requirements.lock), as scripts/tracking_server.sh's MLflow does.
        return url.set(drivername="postgresql+psycopg2").render_as_string(hide_password=False)
    return cfg.storage


def open_storage(url: str, cfg: TuneConfig) -> RDBStorage:
    """The study's storage, with heartbeats: a trial whose worker stopped beating for
    2 x heartbeat_s is failed, and run again with the same parameters (up to `retries` times)."""
    driver = make_url(url).drivername
    engine = {"connect_args": CONNECT_ARGS[driver]} if driver in CONNECT_ARGS else None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return RDBStorage(
                url,
                engine_kwargs=engine,
                heartbeat_interval=cfg.heartbeat_s,
                grace_period=2 * cfg.heartbeat_s,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                    max_retry=cfg.retries
                ),
            )
    except Exception as e:  # SQLAlchemy's and the drivers' errors have no common base
        raise StagewiseError(
            f"tune.storage: cannot open {url} as an Optuna storage: {first_line(e)}; start the "
            "database or fix tune.storage"
        ) from None


def study_lock(paths: Paths, study: str) -> FileLock:
    """The lock the workers of one study take to set it up and to start a trial."""
    folder = paths.mlruns / "tune"
    folder.mkdir(parents=True, exist_ok=True)
    return FileLock(folder / f".{study}.lock")


def open_study(cfg: TuneConfig, paths: Paths, metric: str) -> optuna.Study:
    """Create the study or load it (resume, or another worker's), as this worker sees it: its
    sampler seeded with tune.seed + the worker's number. Call under study_lock()."""
    direction = optimization_direction(metric)
    storage = open_storage(storage_url(cfg, paths), cfg)
    study = optuna.create_study(
        storage=storage, study_name=cfg.study, direction=direction, load_if_exists=True
    )
    if (found := study.direction.name.lower()) != direction:
        raise StagewiseError(
            f"tune.study={cfg.study} was made to {found}, but compare.metric={metric} "
            f"wants {direction}; use another tune.study"
        )
    worker = study.user_attrs.get(WORKERS, 0)
    study.set_user_attr(WORKERS, worker + 1)
    return optuna.load_study(
        study_name=cfg.study,
        storage=storage,
        sampler=optuna.samplers.TPESampler(
            seed=cfg.seed + worker, n_startup_trials=cfg.startup_trials
        ),
        pruner=pruner(cfg),
    )


def pruner(cfg: TuneConfig) -> optuna.pruners.BasePruner:
    if cfg.pruner == Pruner.median:
        return optuna.pruners.MedianPruner(
            n_startup_trials=cfg.startup_trials, n_warmup_steps=cfg.warmup_epochs
        )
    if cfg.pruner == Pruner.hyperband:  # its largest budget: the first finished trial's epochs
        return optuna.pruners.HyperbandPruner(min_resource=max(cfg.warmup_epochs, 1))
    return optuna.pruners.NopPruner()


def counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    return {s.name.lower(): sum(t.state == s for t in trials) for s in TrialState}


def run_trials(
    study: optuna.Study,
    budget: int,
    objective: Callable[[Trial], float],
    lock: FileLock,
    poll_s: float,
    max_failed: int,
) -> None:
    """Run trials until `budget` of the study's trials are complete or pruned, counting every
    worker's. A worker starts a trial only while finished + running trials are short of the
    budget, under the lock until the trial exists; when the others' running trials make up
    the rest, it waits for them (and runs the retry of one whose worker died).

    A trial that raises, or scores NaN or inf, is FAILED, logged in one line, and another
    takes its place (Optuna counts no failed trial toward a budget), until `max_failed` of
    this worker's trials have failed: then the search stops, naming the last failure."""
    failures: list[str] = []

    def unlocked(trial: Trial) -> float:
        lock.release()
        try:
            value = objective(trial)
            if not math.isfinite(value):  # Optuna fails it too, but says so in two warnings
                raise StagewiseError(f"its value is {value}")
            return value
        except optuna.TrialPruned:
            raise
        except Exception as e:
            failures.append(f"trial {trial.number}: {first_line(e)}")
            log.warning("trial %d failed: %s", trial.number, first_line(e))
            raise

    with quiet_failed_trials():
        while len(failures) < max_failed:
            lock.acquire()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    fail_stale_trials(study)
                n = counts(study)
                if n["complete"] + n["pruned"] >= budget:
                    return
                if n["complete"] + n["pruned"] + n["running"] < budget:
                    study.optimize(unlocked, n_trials=1, catch=(Exception,))
                    continue
            finally:
                if lock.is_locked:
                    lock.release()
            time.sleep(poll_s)
    raise StagewiseError(
        f"stopped study {study.study_name}: {len(failures)} of this run's trials failed "
        f"(tune.max_failed_trials={max_failed}), the last, {failures[-1]}; fix that, or narrow "
        "tune.space to values that train"
    )


@contextlib.contextmanager
def quiet_failed_trials() -> Iterator[None]:
    """Optuna logs a failed trial (an error, Ctrl-C) as two warnings, the first with the
    traceback: run_trials logs one line instead. That module of Optuna's warns of nothing
    else; its info lines (a trial finished, pruned) stay."""
    logger = logging.getLogger("optuna.study._optimize")

    def below_warning(record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING

    logger.addFilter(below_warning)
    try:
        yield
    finally:
        logger.removeFilter(below_warning)


class ReportToTrial(Callback):
    """Reports `metric` to the trial after each epoch and, when the pruner finds the trial
    hopeless, stops training as early stopping does: the training ends normally (its run
    FINISHED, with the epochs it did), and raise_if_pruned() then marks the trial pruned."""

    def __init__(self, trial: Trial, metric: str) -> None:
        self.trial, self.metric = trial, metric
        self.pruned_at: int | None = None

    def after_epoch(self, state: FitState) -> None:
        self.trial.report(state.history[-1].value(self.metric), state.epoch)
        if self.trial.should_prune():
            state.stop, self.pruned_at = True, state.epoch
            log.info("trial %d pruned after epoch %d", self.trial.number, state.epoch)

    def raise_if_pruned(self) -> None:
        if self.pruned_at is not None:
            raise optuna.TrialPruned(f"after epoch {self.pruned_at}")


def trial_dir(paths: Paths, study: str, number: int) -> Path:
    """Where a trial writes its model, metrics and checkpoint (never the DVC outputs)."""
    return paths.root / "multirun" / "tune" / study / f"trial-{number}"


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    with contextlib.suppress(ValueError):  # no complete trial
        return study.best_trial
    return None
