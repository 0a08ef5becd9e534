"""MLflow bookkeeping: the only module (with the packaged model's code) that imports mlflow.

Store: sqlite:///<project>/mlruns/mlflow.db with artifacts in <project>/mlruns/artifacts,
resolved from the project root, or MLFLOW_TRACKING_URI when set (e.g. a tracking server).
One run per trained model: train creates it; evaluate and test-holdout add to it through
the run id in models/run.json, without changing its status.
"""

import contextlib
import functools
import hashlib
import os
import subprocess
import time
import warnings
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import Metric, Param, RunStatus
from mlflow.tracking import MlflowClient

from pipeline.errors import StagewiseError
from pipeline.io import read_json
from pipeline.paths import PROJECT_ROOT, ModelFiles, Paths

# Artifact transfers are local and quick: their progress bars only clutter the stage logs.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

PACKAGED_MODEL_CODE = Path(__file__).with_name("packaged_model.py")
# Set during a sweep: the parent run that each job's run becomes a child of.
SWEEP_RUN_ENV = "STAGEWISE_SWEEP_RUN_ID"  # stages/common.py reads it without importing this
MAX_PARAM_LENGTH = 6000


def local_store_uri(paths: Paths) -> str:
    return f"sqlite:///{paths.mlruns / 'mlflow.db'}"


# mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; a value this process exported
# is not the user's choice and must not redirect a later project's runs (tests, benchmarks).
_exported: set[str] = set()


def tracking_uri(paths: Paths) -> str:
    chosen = os.environ.get("MLFLOW_TRACKING_URI")
    if chosen and chosen not in _exported:
        return chosen
    return local_store_uri(paths)


def client(paths: Paths) -> MlflowClient:
    uri = tracking_uri(paths)
    if os.environ.get("MLFLOW_TRACKING_URI") != uri:
        _exported.add(uri)
    mlflow.set_tracking_uri(uri)
    if uri == local_store_uri(paths):
        paths.mlruns.mkdir(parents=True, exist_ok=True)
    return client_for(uri)


@functools.cache
def client_for(uri: str) -> MlflowClient:
    """One client per store: each epoch's metrics reuse its connection. Parallel jobs share a
    sqlite store, which refuses a writer while another writes: those calls are retried."""
    mlflow_client = MlflowClient(uri)
    return RetryLocked(mlflow_client) if uri.startswith("sqlite:") else mlflow_client


LOCK_RETRY_SECONDS = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0)


class RetryLocked:
    """An MlflowClient whose calls are retried while the sqlite database is locked."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.wrapped, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            for delay in LOCK_RETRY_SECONDS:
                try:
                    return attribute(*args, **kwargs)
                except Exception as e:
                    if "database is locked" not in str(e):
                        raise
                    time.sleep(delay)
            return attribute(*args, **kwargs)

        return call


def experiment_id(mlflow_client: MlflowClient, name: str, paths: Paths) -> str:
    """The experiment's id, creating it with its artifacts under mlruns/artifacts if new."""
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None  # a tracking server decides where its artifacts go
    if tracking_uri(paths) == local_store_uri(paths):
        location = (paths.mlruns / "artifacts").as_uri()
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:  # created meanwhile by a parallel job
        return mlflow_client.get_experiment_by_name(name).experiment_id


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


def file_md5(path: Path) -> str:
    """The hash DVC records for a file output, so a run can be matched to dvc.lock."""
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_tags(entrypoint: str) -> dict[str, str]:
    tags = {"mlflow.source.name": entrypoint, "mlflow.source.type": "LOCAL"}
    if exp_name := os.environ.get("DVC_EXP_NAME"):  # set by `dvc exp run`
        tags["dvc.exp_name"] = exp_name
        tags["dvc.exp_baseline_rev"] = os.environ.get("DVC_EXP_BASELINE_REV", "")
    return tags


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


def environment_tags(device: str) -> dict[str, str]:
    import torch

    return {
        "device": device,
        "torch.version": torch.__version__,
        "torch.cuda": str(torch.version.cuda),
    }


@contextlib.contextmanager
def training_run(
    paths: Paths,
    config: dict,
    tags: dict[str, str],
    run_name: str | None = None,
    resume_run_id: str | None = None,
) -> Iterator[str]:
    """Open a new run for one trained model (or reopen the interrupted one being resumed);
    yields its id.

    Ends FINISHED on success, KILLED on Ctrl-C / termination, FAILED on any other error,
    so no run is ever left RUNNING.
    """
    mlflow_client = client(paths)
    if resume_run_id:
        run_id = reopen_run(mlflow_client, paths, resume_run_id)
    else:
        run_id = create_run(mlflow_client, paths, config, tags, run_name)
    monitor = None
    status = RunStatus.to_string(RunStatus.FAILED)
    try:
        if not resume_run_id:
            log_config(mlflow_client, run_id, config)
        if config["tracking"].get("system_metrics"):
            monitor = system_monitor(run_id, paths, resumed=bool(resume_run_id))
        yield run_id
        status = RunStatus.to_string(RunStatus.FINISHED)
    except (KeyboardInterrupt, SystemExit):
        status = RunStatus.to_string(RunStatus.KILLED)
        raise
    except Exception as e:
        mlflow_client.set_tag(run_id, "error", f"{type(e).__name__}: {e}"[:5000])
        raise
    finally:
        if monitor:
            monitor.finish()
        mlflow_client.set_terminated(run_id, status)


def create_run(
    mlflow_client: MlflowClient,
    paths: Paths,
    config: dict,
    tags: dict[str, str],
    run_name: str | None,
) -> str:
    exp = experiment_id(mlflow_client, config["tracking"]["experiment"], paths)
    all_tags = {**source_tags("stages.train"), **git_tags(PROJECT_ROOT), **tags}
    if parent := os.environ.get(SWEEP_RUN_ENV):
        all_tags["mlflow.parentRunId"] = parent
    return mlflow_client.create_run(exp, run_name=run_name, tags=all_tags).info.run_id


def log_config(mlflow_client: MlflowClient, run_id: str, config: dict) -> None:
    """The flattened config as params, and the resolved config as a file."""
    params = [Param(k, v) for k, v in flatten(config).items()]
    for start in range(0, len(params), 100):  # MLflow accepts at most 100 params a call
        mlflow_client.log_batch(run_id, params=params[start : start + 100])
    mlflow_client.log_dict(run_id, config, "config.yaml")


def reopen_run(mlflow_client: MlflowClient, paths: Paths, run_id: str) -> str:
    """Mark an interrupted run RUNNING again: a resumed training continues in it."""
    try:
        mlflow_client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
    except mlflow.exceptions.MlflowException:
        raise StagewiseError(
            f"the checkpoint's MLflow run {run_id} is not in {tracking_uri(paths)}; "
            "train without train.resume"
        ) from None
    mlflow_client.set_tag(run_id, "resumed", "true")
    return run_id


def system_monitor(run_id: str, paths: Paths, resumed: bool) -> Any:
    """MLflow's sampler of CPU, GPU and memory use, logging into run_id until finish()."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(
        run_id, sampling_interval=5, resume_logging=resumed, tracking_uri=tracking_uri(paths)
    )
    monitor.start()
    return monitor


def at_step(metrics: dict[str, float], step: int) -> list[Metric]:
    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, step) for k, v in metrics.items()]


def log_metric_list(paths: Paths, run_id: str, metrics: list[Metric]) -> None:
    """Batched calls of at most 1000 metrics, MLflow's limit per call."""
    mlflow_client = client(paths)
    for start in range(0, len(metrics), 1000):
        mlflow_client.log_batch(run_id, metrics=metrics[start : start + 1000])


def log_metrics(paths: Paths, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
    """One batched call for all metrics of a step."""
    log_metric_list(paths, run_id, at_step(metrics, step))


def logged_steps(paths: Paths, run_id: str, metric: str) -> set[int]:
    return {m.step for m in client(paths).get_metric_history(run_id, metric)}


class MetricBuffer:
    """Per-epoch metrics, stored in one batched call at most every `interval` seconds and at
    the end: short epochs do not wait for the store each time (about 8 ms a write on sqlite),
    and the MLflow UI is at most `interval` seconds behind."""

    def __init__(self, paths: Paths, run_id: str, interval: float = 5.0) -> None:
        self.paths, self.run_id, self.interval = paths, run_id, interval
        self.pending: list[Metric] = []
        self.last_write = time.monotonic()

    def log(self, metrics: dict[str, float], step: int) -> None:
        self.pending += at_step(metrics, step)
        if time.monotonic() - self.last_write >= self.interval:
            self.flush()

    def flush(self) -> None:
        log_metric_list(self.paths, self.run_id, self.pending)
        self.pending = []
        self.last_write = time.monotonic()

    def __enter__(self) -> "MetricBuffer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()  # also when training stops with an error: keep the epochs it did


def log_series(paths: Paths, run_id: str, series: dict[str, list[float]]) -> None:
    """Whole metric curves: value i of each at step i."""
    now = int(time.time() * 1000)
    batch = [
        Metric(name, float(value), now, step)
        for name, values in series.items()
        for step, value in enumerate(values)
    ]
    log_metric_list(paths, run_id, batch)


def set_tags(paths: Paths, run_id: str, tags: dict[str, Any]) -> None:
    mlflow_client = client(paths)
    for key, value in tags.items():
        mlflow_client.set_tag(run_id, key, str(value))


def log_split_inputs(paths: Paths, run_id: str, splits: dict[str, str]) -> None:
    """Record the splits a run used as MLflow dataset inputs ({split: context}), identified by
    the digest of their image ids (from data/split/report.json): same digest, same images."""
    import json

    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    report = json.loads(paths.split_report.read_text(encoding="utf-8"))
    with (
        warnings.catch_warnings()
    ):  # two registered sources both claim local files; either is right
        warnings.simplefilter("ignore", UserWarning)
        source = resolve_dataset_source(str(paths.split))
    inputs = [
        DatasetInput(
            MetaDataset(
                source, name=split, digest=report["splits"][split]["digest"][:32]
            )._to_mlflow_entity(),
            tags=[InputTag("mlflow.data.context", context)],
        )
        for split, context in splits.items()
    ]
    client(paths).log_inputs(run_id, inputs)


def log_artifact(paths: Paths, run_id: str, path: Path, folder: str | None = None) -> None:
    client(paths).log_artifact(run_id, str(path), folder)


def log_figure(paths: Paths, run_id: str, figure: Any, name: str) -> None:
    client(paths).log_figure(run_id, figure, name)


def trained_run(paths: Paths) -> dict:
    """models/run.json of the workspace's model: its MLflow run, which must be in the store."""
    info = read_json(ModelFiles(paths.model_dir).run, "train")
    try:
        client(paths).get_run(info["run_id"])
    except mlflow.exceptions.MlflowException:
        raise StagewiseError(
            f"MLflow run {info['run_id']} (from models/run.json) is not in {tracking_uri(paths)}; "
            "rerun training with `dvc repro --force train`"
        ) from None
    return info


def run_model_files(paths: Paths, run_id: str, dst: Path) -> ModelFiles:
    """Download the weights and spec of the model an earlier training run logged into dst."""
    mlflow_client = client(paths)
    try:
        mlflow_client.get_run(run_id)
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"runs:/{run_id}/model/artifacts", dst_path=str(dst)
        )
    except mlflow.exceptions.MlflowException as e:
        first = str(e).splitlines()[0]
        raise StagewiseError(
            f"model.weights=runs:/{run_id}: no trained model of that run in "
            f"{tracking_uri(paths)} ({first})"
        ) from None
    return ModelFiles(Path(local))


def log_model(paths: Paths, run_id: str, files: ModelFiles, example: np.ndarray) -> str:
    """Log the trained model as an MLflow pyfunc model that takes raw uint8 images.

    The model is logged "from code" (pipeline/packaged_model.py), not pickled; its weights
    and spec travel as artifacts. Returns the model URI.
    """
    from mlflow.models import ModelSignature, infer_signature
    from mlflow.types import Schema, TensorSpec

    from pipeline.inference import Classifier

    output = Classifier.load(files).predict_frame(example)
    # Any batch size, image size and channel count: the model resizes and converts itself.
    images = Schema([TensorSpec(np.dtype(np.uint8), (-1, -1, -1, -1))])
    signature = ModelSignature(inputs=images, outputs=infer_signature(example, output).outputs)
    requirements = [
        f"{name}=={version(name)}"
        for name in ("torch", "numpy", "pandas", "safetensors", "pillow", "pyarrow")
    ]
    client(paths)
    with mlflow.start_run(run_id=run_id, log_system_metrics=False):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PACKAGED_MODEL_CODE),
            artifacts={"weights": str(files.weights), "spec": str(files.spec)},
            code_paths=[str(PROJECT_ROOT / "pipeline")],
            signature=signature,
            input_example=example,
            pip_requirements=requirements,
        )
    return info.model_uri


def register_candidate(paths: Paths, model_uri: str, name: str, metrics: dict[str, float]) -> str:
    """Register the model as a new version of `name`, alias it "candidate", tag its metrics."""
    mlflow_client = client(paths)
    version = mlflow.register_model(model_uri, name).version
    mlflow_client.set_registered_model_alias(name, "candidate", version)
    for key, value in metrics.items():
        mlflow_client.set_model_version_tag(name, version, key, str(value))
    return str(version)


def start_sweep(paths: Paths, experiment: str, overrides: list[str]) -> str:
    """Open the parent run of a sweep; returns its id."""
    mlflow_client = client(paths)
    exp = experiment_id(mlflow_client, experiment, paths)
    tags = {
        **source_tags("sweep"),
        **git_tags(PROJECT_ROOT),
        "sweep.overrides": " ".join(overrides),
    }
    run = mlflow_client.create_run(exp, run_name=f"sweep {' '.join(overrides)}"[:250], tags=tags)
    return run.info.run_id


def finish_sweep(
    paths: Paths, parent_id: str, jobs: int, failed: int, metric: str = "valid_error_rate"
) -> dict:
    """Summarize the sweep on its parent run (job counts, the best child by `metric`, lowest
    first) and end it: FINISHED, or FAILED when no job succeeded."""
    mlflow_client = client(paths)
    parent = mlflow_client.get_run(parent_id)
    children = mlflow_client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    scored = [c for c in children if c.info.status == "FINISHED" and metric in c.data.metrics]
    # Jobs in other processes (parallel launchers) are counted by their runs only.
    failed_runs = sum(c.info.status == "FAILED" for c in children)
    summary: dict[str, Any] = {
        "jobs": max(jobs, len(children)),
        "failed_jobs": max(failed, failed_runs),
    }
    if scored:
        best = min(scored, key=lambda c: c.data.metrics[metric])
        summary[f"best_{metric}"] = best.data.metrics[metric]
        mlflow_client.set_tag(parent_id, "sweep.best_run_id", best.info.run_id)
    log_metrics(paths, parent_id, summary)
    mlflow_client.set_terminated(parent_id, "FINISHED" if scored else "FAILED")
    return summary


def end_run(paths: Paths, run_id: str, status: str) -> None:
    client(paths).set_terminated(run_id, status)


def runs_of(paths: Paths, experiment: str, sweep: str | None) -> list[dict]:
    """The runs of a sweep (children of its parent run), or of a whole experiment (no parents)."""
    mlflow_client = client(paths)
    found = mlflow_client.get_experiment_by_name(experiment)
    if found is None:
        return []
    query = f"tags.mlflow.parentRunId = '{sweep}'" if sweep else "tags.`sweep.overrides` IS NULL"
    return [
        {
            "run_id": r.info.run_id,
            "status": r.info.status,
            "params": r.data.params,
            "metrics": r.data.metrics,
        }
        for r in mlflow_client.search_runs([found.experiment_id], query, max_results=10000)
    ]
