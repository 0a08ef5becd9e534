"""A run handle, and the life of a training run: created with the whole config as params,
ended FINISHED, FAILED or KILLED (never left RUNNING), reopened when training resumes.

One run per trained model: train creates it; evaluate and test-holdout add to it through
the run id in models/run.json, without changing its status.
"""

import contextlib
import json
import logging
import os
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from filelock import FileLock, Timeout
from mlflow.entities import Metric, Param, RunStatus

from pipeline.core.errors import StagewiseError
from pipeline.core.io import read_json
from pipeline.core.paths import PROJECT_ROOT, ModelFiles, Paths
from pipeline.tracking.store import Store, open_store, shown, unreachable

log = logging.getLogger(__name__)

# Set during a sweep: the parent run that each job's run becomes a child of.
SWEEP_RUN_ENV = "STAGEWISE_SWEEP_RUN_ID"  # stages/common.py reads it without importing this
MAX_PARAM_LENGTH = 6000
# The training run's tag holding pipeline.core.config.config_digest of its configuration.
CONFIG_DIGEST_TAG = "config.digest"
MAX_METRICS_PER_CALL = 1000  # MLflow's limit for log_batch
MAX_PARAMS_PER_CALL = 100

# MLflow's UI charts a run's metrics in sections named by the part before the last "/":
# named sections first, alphabetically, then the unnamed ones ("Model metrics"). The
# per-epoch curves are what people look at, so they get the section that sorts first
# (per-class metrics sit in "<split>_per_class", the final numbers stay unnamed).
CURVES_SECTION = "epoch"


def curve_name(metric: str) -> str:
    """The MLflow name of a per-epoch metric: train_loss -> epoch/train_loss,
    epoch_seconds -> epoch/seconds."""
    return f"{CURVES_SECTION}/{metric.removeprefix('epoch_')}"


def at_step(metrics: dict[str, float], step: int) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in metrics.items()]


DATASET_RACE_ATTEMPTS = 3


def raced_on_dataset(error: Exception) -> bool:
    """Whether a write failed because another run inserted the same dataset first
    (PostgreSQL, MySQL and sqlite word a unique-key violation differently)."""
    message = str(error)
    duplicate = ("UniqueViolation", "Duplicate entry", "UNIQUE constraint failed")
    return "dataset" in message and any(word in message for word in duplicate)


@dataclass(frozen=True)
class Run:
    """One MLflow run of a store: what stages log into."""

    store: Store
    id: str

    def log_metric_list(self, metrics: list[Metric]) -> None:
        """Batched calls of at most MAX_METRICS_PER_CALL metrics."""
        for start in range(0, len(metrics), MAX_METRICS_PER_CALL):
            self.store.client.log_batch(
                self.id, metrics=metrics[start : start + MAX_METRICS_PER_CALL]
            )

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        """One batched call for all metrics of a step."""
        self.log_metric_list(at_step(metrics, step))

    def log_series(self, series: dict[str, list[float]]) -> None:
        """Whole metric curves: value i of each at step i."""
        now = int(time.time() * 1000)
        self.log_metric_list(
            [
                Metric(name, float(value), now, step)
                for name, values in series.items()
                for step, value in enumerate(values)
            ]
        )

    def logged_steps(self, metric: str) -> set[int]:
        return {m.step for m in self.store.client.get_metric_history(self.id, metric)}

    def ui_route(self) -> str:
        """The run's charts in the MLflow UI: the part of the URL after the UI's address.

        workflowType=machine_learning opens MLflow 3's model-training view; without it the
        UI shows the GenAI view until the user switches (it ignores the experiment's kind)."""
        experiment = self.store.client.get_run(self.id).info.experiment_id
        return (
            f"#/experiments/{experiment}/runs/{self.id}/model-metrics?workflowType=machine_learning"
        )

    def tags(self) -> dict[str, str]:
        return self.store.client.get_run(self.id).data.tags

    def set_tags(self, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self.store.client.set_tag(self.id, key, str(value))

    def log_artifact(self, path: Path, folder: str | None = None) -> None:
        self.store.client.log_artifact(self.id, str(path), folder)

    def log_figure(self, figure: Any, name: str) -> None:
        self.store.client.log_figure(self.id, figure, name)

    def log_split_inputs(
        self, paths: Paths, splits: dict[str, str], raw: dict[str, str] | None = None
    ) -> None:
        """Record the splits the run used as MLflow dataset inputs ({split: context}),
        identified by the digest of their image ids (from data/split/report.json): same
        digest, same images. raw (pipeline.data.lineage's tags) adds the raw dataset they
        come from, identified by its DVC md5: same digest, same dataset version."""
        report = json.loads(paths.split_report.read_text(encoding="utf-8"))
        inputs = [
            dataset_input(str(paths.split), split, report["splits"][split]["digest"], context)
            for split, context in splits.items()
        ]
        if raw:
            name = os.path.basename(os.path.normpath(raw["dataset.path"]))
            digest = raw["dataset.md5"].removesuffix(".dir")
            where = {"dvc.md5": raw["dataset.md5"], "dataset.source": raw["dataset.source"]}
            inputs.append(dataset_input(raw["dataset.path"], name, digest, "raw", where))
        for attempt in range(DATASET_RACE_ATTEMPTS):
            try:
                self.store.client.log_inputs(self.id, inputs)
                return
            except mlflow.exceptions.MlflowException as e:
                # MLflow looks the dataset up, then inserts it: when a parallel run inserted
                # the same split in between, ours fails on the unique key and rolls back.
                # The dataset exists now, so the next call finds it and only links it.
                if not raced_on_dataset(e) or attempt == DATASET_RACE_ATTEMPTS - 1:
                    raise

    def end(self, status: str) -> None:
        self.store.client.set_terminated(self.id, status)


def dataset_input(
    source: str, name: str, digest: str, context: str, tags: dict[str, str] | None = None
) -> Any:
    """An MLflow dataset input: a dataset named name at source, identified by digest."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    with warnings.catch_warnings():  # two registered sources both claim local files
        warnings.simplefilter("ignore", UserWarning)
        resolved = resolve_dataset_source(source)
    extra = [InputTag(key, value) for key, value in (tags or {}).items()]
    return DatasetInput(
        MetaDataset(resolved, name=name, digest=digest[:32])._to_mlflow_entity(),
        tags=[InputTag("mlflow.data.context", context), *extra],
    )


# The longest wait between two attempts to write while the tracking server is away.
OUTAGE_RETRY_SECONDS = 60.0


class MetricBuffer:
    """Per-epoch metrics, logged as curves (curve_name) in one batched call at most every
    `interval` seconds and at the end: short epochs do not wait for the store each time
    (about 8 ms a write on sqlite), and the MLflow UI is at most `interval` seconds behind.

    A tracking server that stops answering does not stop training: the metrics stay here and
    are written once it answers again (tried with a doubling wait, at most
    OUTAGE_RETRY_SECONDS apart). MLflow's own retries (MLFLOW_HTTP_REQUEST_MAX_RETRIES,
    default 7 with backoff: minutes) would block the epoch loop meanwhile, so a write is
    tried only after the server answered a quick probe (Store.answers)."""

    def __init__(self, run: Run, interval: float = 5.0) -> None:
        self.run, self.interval = run, interval
        self.pending: list[Metric] = []
        self.tags: dict[str, str] = {}  # set mid-training: written with the metrics
        self.next_write = time.monotonic() + interval
        self.failures = 0

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.pending += at_step({curve_name(k): v for k, v in metrics.items()}, step)
        if time.monotonic() >= self.next_write:
            self.try_flush()

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.tags.update({key: str(value) for key, value in tags.items()})
        self.try_flush()

    def try_flush(self) -> None:
        """Write the pending metrics, or keep them for later when the server is away."""
        if self.run.store.answers():
            try:
                self.flush()
                return
            except mlflow.exceptions.MlflowException as e:
                if not unreachable(e):
                    raise
        self.failures += 1
        if self.failures == 1:
            log.warning(
                "MLflow tracking server %s does not answer: training goes on, and its metrics "
                "are written when the server is back",
                shown(self.run.store.uri),
            )
        wait = min(self.interval * 2**self.failures, OUTAGE_RETRY_SECONDS)
        self.next_write = time.monotonic() + wait

    def flush(self) -> None:
        self.run.log_metric_list(self.pending)
        self.run.set_tags(self.tags)
        if self.failures:
            log.info("MLflow tracking server answers again: the kept metrics are written")
        self.pending, self.tags, self.failures = [], {}, 0
        self.next_write = time.monotonic() + self.interval

    def __enter__(self) -> "MetricBuffer":
        return self

    def __exit__(self, exc_type: object, error: BaseException | None, traceback: object) -> None:
        if unreachable(error):
            return  # one more write would wait MLflow's whole retry budget again
        self.flush()  # also when training stops with an error: keep the epochs it did


def flatten(config: dict, prefix: str = "") -> dict[str, str]:
    """{"train": {"lr": 0.1}} -> {"train.lr": "0.1"}: MLflow params are flat strings."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_LENGTH]
    return flat


def source_tags(entrypoint: str) -> dict[str, str]:
    tags = {"mlflow.source.name": entrypoint, "mlflow.source.type": "LOCAL"}
    if exp_name := os.environ.get("DVC_EXP_NAME"):  # set by `dvc exp run`
        tags["dvc.exp_name"] = exp_name
        tags["dvc.exp_baseline_rev"] = os.environ.get("DVC_EXP_BASELINE_REV", "")
    if job := slurm_job_id():
        tags["slurm.job_id"] = job
    return tags


def slurm_job_id() -> str | None:
    """The SLURM job this process runs in, as squeue shows it and scancel takes it (an array
    task is <array job>_<task>, the name of its submitit log folder); None outside SLURM."""
    if array_job := os.environ.get("SLURM_ARRAY_JOB_ID"):
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ.get("SLURM_JOB_ID")


def git_tags(root: Path) -> dict[str, str]:
    def git(*args: str) -> str:
        result = subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=False
        )
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    if not commit:
        return {}
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"mlflow.source.git.commit": commit, "git.dirty": str(dirty).lower()}


@contextlib.contextmanager
def training_run(
    paths: Paths,
    config: dict,
    tags: dict[str, str],
    run_name: str | None = None,
    resume_run_id: str | None = None,
) -> Iterator[Run]:
    """Open a new run for one trained model (or reopen the interrupted one being resumed).

    Ends FINISHED on success, KILLED on Ctrl-C / termination, FAILED on any other error,
    so no run is ever left RUNNING.
    """
    store = open_store(paths)
    end_orphaned_runs(paths, keep=resume_run_id)
    if resume_run_id:
        run = reopen_run(store, resume_run_id)
    else:
        run = create_run(store, config, tags, run_name)
    monitor = None
    status: str | None = RunStatus.to_string(RunStatus.FAILED)
    owner = claim(paths, run.id)
    try:
        if not resume_run_id:
            log_config(run, config)
        if config["tracking"].get("system_metrics"):
            monitor = system_monitor(run, resumed=bool(resume_run_id))
        yield run
        status = RunStatus.to_string(RunStatus.FINISHED)
    except (KeyboardInterrupt, SystemExit):
        status = RunStatus.to_string(RunStatus.KILLED)
        raise
    except Exception as e:
        if unreachable(e):
            status = None  # it cannot be told; the message says what was kept
            raise StagewiseError(lost_server_message(run)) from None
        run.set_tags({"error": f"{type(e).__name__}: {e}"[:5000]})
        raise
    finally:
        if monitor:
            monitor.finish()
        if status:
            run.end(status)
        release(paths, run.id, owner)


def lost_server_message(run: Run) -> str:
    return (
        f"the MLflow tracking server {shown(run.store.uri)} stopped answering during run "
        f"{run.id}, which stays RUNNING there; the trained model files and the checkpoint are "
        "kept: once the server is back, train again with train.resume=true to log the missing "
        "epochs and the model into that run"
    )


def create_run(store: Store, config: dict, tags: dict[str, str], run_name: str | None) -> Run:
    experiment = store.experiment_id(config["tracking"]["experiment"])
    all_tags = {**source_tags("stages.train"), **git_tags(PROJECT_ROOT), **tags}
    if parent := os.environ.get(SWEEP_RUN_ENV):
        all_tags["mlflow.parentRunId"] = parent
    created = store.client.create_run(experiment, run_name=run_name, tags=all_tags)
    return Run(store, created.info.run_id)


def log_config(run: Run, config: dict) -> None:
    """The flattened config as params, and the resolved config as a file."""
    params = [Param(k, v) for k, v in flatten(config).items()]
    for start in range(0, len(params), MAX_PARAMS_PER_CALL):
        run.store.client.log_batch(run.id, params=params[start : start + MAX_PARAMS_PER_CALL])
    run.store.client.log_dict(run.id, config, "config.yaml")


def reopen_run(store: Store, run_id: str) -> Run:
    """Mark an interrupted run RUNNING again: a resumed training continues in it."""
    try:
        store.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
    except mlflow.exceptions.MlflowException:
        raise StagewiseError(
            f"the checkpoint's MLflow run {run_id} is not in {store.uri}; "
            "train without train.resume"
        ) from None
    run = Run(store, run_id)
    run.set_tags({"resumed": "true"})
    return run


def end_abandoned_run(paths: Paths, run_id: str, reason: str) -> bool:
    """Mark a run KILLED, with the reason as its `killed_reason` tag, if it is still RUNNING:
    its process was killed (SIGKILL leaves no chance to end it) and nothing will resume it.
    Returns whether it was."""
    store = open_store(paths)
    try:
        status = store.client.get_run(run_id).info.status
    except mlflow.exceptions.MlflowException:
        return False  # not in this store (e.g. the checkpoint came from another project)
    if status != RunStatus.to_string(RunStatus.RUNNING):
        return False
    run = Run(store, run_id)
    run.set_tags({"killed_reason": reason})
    run.end(RunStatus.to_string(RunStatus.KILLED))
    return True


# A process holding a run open holds a lock on open/<run id>.lock in the store's folder, and
# open/<run id>.open says it does: the kernel drops the lock of a process killed in any way
# (SIGKILL, the OOM killer), so a later training can tell a run that nobody will end from one
# still open in another process, e.g. a parallel sweep job. (filelock truncates its lock file,
# so the marker that the lock is taken is a second file.)
OPEN_RUNS = "open"
ORPHANED = "its process was killed before it could end the run (SIGKILL, out of memory, a crash)"


def claim(paths: Paths, run_id: str) -> FileLock:
    folder = paths.mlruns / OPEN_RUNS
    folder.mkdir(parents=True, exist_ok=True)
    owner = FileLock(folder / f"{run_id}.lock")
    owner.acquire()
    (folder / f"{run_id}.open").touch()  # only after the lock is held: see end_orphaned_runs
    return owner


def release(paths: Paths, run_id: str, owner: FileLock) -> None:
    folder = paths.mlruns / OPEN_RUNS
    (folder / f"{run_id}.open").unlink(missing_ok=True)
    (folder / f"{run_id}.lock").unlink(missing_ok=True)
    owner.release()


def end_orphaned_runs(paths: Paths, keep: str | None = None) -> None:
    """Mark KILLED the runs whose process died holding them open, except `keep` (the run a
    resumed training reopens)."""
    for marker in sorted((paths.mlruns / OPEN_RUNS).glob("*.open")):
        run_id = marker.stem
        if run_id == keep:
            continue  # claimed again once reopened
        lock = FileLock(marker.with_suffix(".lock"))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            continue  # its process is alive and holds it
        try:
            if end_abandoned_run(paths, run_id, ORPHANED):
                log.info("MLflow run %s of a killed process marked KILLED", run_id)
            marker.unlink(missing_ok=True)
            marker.with_suffix(".lock").unlink(missing_ok=True)
        finally:
            lock.release()


def system_monitor(run: Run, resumed: bool) -> Any:
    """MLflow's sampler of CPU, GPU and memory use, logging into the run until finish()."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(
        run.id, sampling_interval=5, resume_logging=resumed, tracking_uri=run.store.uri
    )
    monitor.start()
    return monitor


def trained_run(paths: Paths) -> tuple[Run, dict]:
    """The workspace model's run (from models/run.json), which must be in the store, and
    run.json itself."""
    info = read_json(ModelFiles(paths.model_dir).run, "train")
    store = open_store(paths)
    try:
        store.client.get_run(info["run_id"])
    except mlflow.exceptions.MlflowException:
        raise StagewiseError(
            f"MLflow run {info['run_id']} (from models/run.json) is not in {store.uri}; "
            "rerun training with `dvc repro --force train`"
        ) from None
    return Run(store, info["run_id"]), info
