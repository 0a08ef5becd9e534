"""Which MLflow store a project records into, and one client for it.

Store: sqlite:///<project>/mlruns/mlflow.db with artifacts in <project>/mlruns/artifacts,
resolved from the project's home (not the working directory: queued DVC experiments run in
temporary copies), or MLFLOW_TRACKING_URI when the user set it (e.g. a tracking server).
"""

import functools
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import mlflow
from mlflow.tracking import MlflowClient

from pipeline.paths import Paths

# Artifact transfers are local and quick: their progress bars only clutter the stage logs.
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

# MLflow's INFO lines narrate its housekeeping (creating the sqlite tables, validating the
# input example) into every stage's output; its warnings still show. MLFLOW_LOGGING_LEVEL,
# when the user sets it, wins.
if "MLFLOW_LOGGING_LEVEL" not in os.environ:
    logging.getLogger("mlflow").setLevel(logging.WARNING)

# The experiment's kind, for MLflow UIs that read it. MLflow 3.17's UI does not: it opens the
# GenAI view unless the URL says workflowType=machine_learning (runs.ui_route) or the
# browser last chose "Model training".
EXPERIMENT_KIND_TAG = {"mlflow.experimentKind": "custom_model_development"}

# mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; a value this process exported
# is not the user's choice and must not redirect a later project's runs (tests, benchmarks).
_exported: set[str] = set()


def local_store_uri(paths: Paths) -> str:
    return f"sqlite:///{paths.mlruns / 'mlflow.db'}"


def tracking_uri(paths: Paths) -> str:
    chosen = os.environ.get("MLFLOW_TRACKING_URI")
    if chosen and chosen not in _exported:
        return chosen
    return local_store_uri(paths)


@dataclass(frozen=True)
class Store:
    """The project's MLflow store: its URI and a client; the fluent API (model logging,
    registry, downloads) is pointed at it once, when it is opened."""

    uri: str
    client: Any  # MlflowClient, or RetryLocked around one for sqlite
    artifact_root: str | None  # where new experiments keep artifacts; None: the server decides

    def experiment_id(self, name: str) -> str:
        """The experiment's id, creating it (as a model-training experiment) if new."""
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            if not set(EXPERIMENT_KIND_TAG) & set(found.tags):  # made before the kind existed
                for key, value in EXPERIMENT_KIND_TAG.items():
                    self.client.set_experiment_tag(found.experiment_id, key, value)
            return found.experiment_id
        try:
            return self.client.create_experiment(
                name, artifact_location=self.artifact_root, tags=EXPERIMENT_KIND_TAG
            )
        except mlflow.exceptions.MlflowException:  # created meanwhile by a parallel job
            return self.client.get_experiment_by_name(name).experiment_id


def open_store(paths: Paths) -> Store:
    """The store for paths' project (MLFLOW_TRACKING_URI when the user set one)."""
    uri = tracking_uri(paths)
    if os.environ.get("MLFLOW_TRACKING_URI") != uri:
        _exported.add(uri)
    mlflow.set_tracking_uri(uri)
    artifact_root = None
    if uri == local_store_uri(paths):
        paths.mlruns.mkdir(parents=True, exist_ok=True)
        artifact_root = (paths.mlruns / "artifacts").as_uri()
    return Store(uri, client_for(uri), artifact_root)


@functools.cache
def client_for(uri: str) -> Any:
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
