"""Which MLflow store a project records into, and one client for it.

Store: sqlite:///<project>/mlruns/mlflow.db with artifacts in <project>/mlruns/artifacts,
resolved from the project's home (not the working directory: queued DVC experiments run in
temporary copies), or MLFLOW_TRACKING_URI when the user set it (e.g. a tracking server).
"""

import contextlib
import functools
import logging
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import mlflow
import requests
from mlflow.tracking import MlflowClient

from pipeline.core.errors import StagewiseError
from pipeline.core.paths import Paths

log = logging.getLogger("stagewise")

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
# The mark is an environment variable so that child processes (train.devices > 1 workers)
# inherit it with the URI instead of taking that URI for the user's.
EXPORTED = "STAGEWISE_EXPORTED_TRACKING_URI"


def local_store_uri(paths: Paths) -> str:
    return f"sqlite:///{paths.mlruns / 'mlflow.db'}"


def tracking_uri(paths: Paths) -> str:
    credentials_out_of_uri()
    chosen = os.environ.get("MLFLOW_TRACKING_URI")
    if chosen and chosen != os.environ.get(EXPORTED):
        return chosen
    return local_store_uri(paths)


CREDENTIAL_VARIABLES = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def credentials_out_of_uri() -> None:
    """Move a server URI's user:password@ into MLflow's own credential variables, leaving
    MLFLOW_TRACKING_URI without them, for this process and the ones it starts: MLflow prints
    the URI in every "View run ... at" line (so `dvc repro` logs would keep the password),
    and requests sends the variables exactly as it sends a URI's credentials."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "")
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or (parts.username, parts.password) == (None, None):
        return
    given = (unquote(parts.username or ""), unquote(parts.password or ""))
    for variable, value in zip(CREDENTIAL_VARIABLES, given, strict=True):
        if os.environ.get(variable, value) != value:
            raise StagewiseError(
                f"MLFLOW_TRACKING_URI carries credentials that differ from {variable}; keep "
                "them in MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD only"
            )
    os.environ.update(zip(CREDENTIAL_VARIABLES, given, strict=True))
    os.environ["MLFLOW_TRACKING_URI"] = shown(uri)


@dataclass(frozen=True)
class Store:
    """The project's MLflow store: its URI and a client; the fluent API (model logging,
    registry, downloads) is pointed at it once, when it is opened."""

    uri: str
    client: Any  # MlflowClient, or RetryLocked around one for sqlite
    artifact_root: str | None  # where new experiments keep artifacts; None: the server decides

    def __reduce__(self) -> tuple:
        """Pickled as its URI (Hydra's parallel launcher pickles the sweep's parent run): a
        client holds a database engine, which does not pickle."""
        return reconnect, (self.uri, self.artifact_root)

    def answers(self) -> bool:
        """Whether the store can take a write now: a local store always, a server when it
        answers within seconds (see server_answers)."""
        return not self.is_server() or server_answers(self.uri)

    def is_server(self) -> bool:
        """Whether the store is a tracking server (shared), not a local database."""
        return urlsplit(self.uri).scheme in ("http", "https")

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
    """The store for paths' project (MLFLOW_TRACKING_URI when the user set one), checked to
    answer: see check_store."""
    uri = tracking_uri(paths)
    check_store(uri)
    if os.environ.get("MLFLOW_TRACKING_URI") != uri:
        os.environ[EXPORTED] = uri
    mlflow.set_tracking_uri(uri)
    artifact_root = None
    if uri == local_store_uri(paths):
        paths.mlruns.mkdir(parents=True, exist_ok=True)
        artifact_root = (paths.mlruns / "artifacts").as_uri()
        follow_project(paths.mlruns)
    return reconnect(uri, artifact_root)


def reconnect(uri: str, artifact_root: str | None) -> Store:
    """The Store of uri, with this process's client for it."""
    return Store(uri, client_for(uri), artifact_root)


# Where a local store records absolute artifact locations: (table, column).
ARTIFACT_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
)


@functools.cache
def follow_project(mlruns: Path) -> None:
    """Point a local store's artifact locations at this mlruns/ when the project was moved.

    MLflow records each experiment's, run's and model's artifact location as an absolute
    path: after `mv project elsewhere`, new runs would recreate the old folder and logged
    models would no longer load. A location under another project's mlruns/artifacts (what
    open_store creates experiments with) is rewritten, unless that old folder still exists
    and this project has no artifacts of its own (the db alone was copied)."""
    db, artifacts = mlruns / "mlflow.db", mlruns / "artifacts"
    if not db.is_file():
        return
    with contextlib.closing(sqlite3.connect(db, timeout=30)) as connection, connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
        if "experiments" not in tables:
            return  # a new store: MLflow creates its tables
        old = next(
            (
                location
                for (location,) in connection.execute("SELECT artifact_location FROM experiments")
                if location.startswith("file://")
                and location.endswith("/mlruns/artifacts")
                and location != artifacts.as_uri()
            ),
            None,
        )
        if old is None or (local_path(old).exists() and not artifacts.exists()):
            return
        old_mlruns = local_path(old).parent
        prefixes = [  # URIs, and the plain paths MLflow gives its Default experiment
            (f"{old.removesuffix('/artifacts')}/", f"{mlruns.as_uri()}/"),
            (f"{old_mlruns}/", f"{mlruns}/"),
        ]
        for table, column in ARTIFACT_COLUMNS:
            if table not in tables:
                continue
            for before, after in prefixes:
                connection.execute(
                    f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                    f"WHERE substr({column}, 1, ?) = ?",
                    (after, len(before) + 1, len(before), before),
                )
    log.info(
        "the project moved: MLflow artifact locations now under %s (were %s)", mlruns, old_mlruns
    )


def local_path(file_uri: str) -> Path:
    return Path(unquote(urlsplit(file_uri).path))


# How long a tracking server may take to answer the check. MLflow's own client retries a
# refused connection for minutes (MLFLOW_HTTP_REQUEST_MAX_RETRIES, default 7, with
# exponential backoff), which is right mid-training and wrong before any work is done.
REACH_TIMEOUT_SECONDS = 5


def shown(uri: str) -> str:
    """uri without the user:password@ a server URI may carry: errors never show credentials."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


@functools.cache
def check_store(uri: str) -> None:
    """Fail in seconds, with one line, when the store cannot be used: a tracking server that
    does not answer, or a local sqlite store that is damaged. Once per store and process."""
    scheme = urlsplit(uri).scheme
    if scheme == "sqlite":
        check_sqlite(Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None)
    elif scheme in ("http", "https"):
        check_server(uri)


def check_reachable(paths: Paths) -> None:
    """For stages that track: check the store before doing minutes of work."""
    check_store(tracking_uri(paths))


def check_server(uri: str) -> None:
    """The server answers, and takes the credentials (401 otherwise; a server without
    authentication answers 200); MLflow reports the rest (certificates, permissions)."""
    try:
        answer = requests.get(
            f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search",
            params={"max_results": 1},
            auth=basic_auth(),
            timeout=REACH_TIMEOUT_SECONDS,
        )
    except requests.exceptions.SSLError:
        return  # it answered; certificates are MLflow's business (MLFLOW_TRACKING_INSECURE_TLS...)
    except requests.exceptions.RequestException as e:
        timed_out = isinstance(e, requests.exceptions.Timeout)
        why = f"no answer within {REACH_TIMEOUT_SECONDS} s" if timed_out else "cannot connect"
        raise StagewiseError(
            f"MLflow tracking server {shown(uri)} (MLFLOW_TRACKING_URI) is unreachable ({why}); "
            "start it, fix MLFLOW_TRACKING_URI, or unset it to track into the project's own mlruns/"
        ) from None
    if answer.status_code == 401:
        given = "were refused" if basic_auth() else "are not set"
        raise StagewiseError(
            f"MLflow tracking server {shown(uri)} asks for a user: the credentials in "
            f"MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD {given}; set the right ones"
        )


def basic_auth() -> tuple[str, str] | None:
    """The user and password MLflow's client sends (its variables), if both are set."""
    username, password = (os.environ.get(variable) for variable in CREDENTIAL_VARIABLES)
    return (username, password) if username and password else None


# How long a server may take to answer between epochs before its writes wait for later: a
# blocked write would stall training for MLflow's whole retry budget (minutes by default).
PROBE_TIMEOUT_SECONDS = 2


def server_answers(uri: str) -> bool:
    try:
        requests.get(f"{uri.rstrip('/')}/health", timeout=PROBE_TIMEOUT_SECONDS)
    except requests.exceptions.SSLError:
        return True
    except requests.exceptions.RequestException:
        return False
    return True


def unreachable(error: BaseException | None) -> bool:
    """Whether error says the tracking server did not answer: MLflow raises an MlflowException
    over the requests error it gave up on after its own retries (MLFLOW_HTTP_REQUEST_*)."""
    while error is not None:
        if isinstance(error, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
            return True
        error = error.__cause__ or error.__context__
    return False


DAMAGE_SIGNS = ("malformed", "not a database")


def check_sqlite(db: Path | None) -> None:
    """A truncated or overwritten mlflow.db otherwise fails deep inside MLflow's migrations
    with a long traceback. quick_check reads every page once: milliseconds for a store of a
    few MB."""
    if db is None or not db.is_file():
        return  # MLflow creates it
    try:
        with contextlib.closing(sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True)) as connection:
            result = connection.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as e:
        if not any(sign in str(e) for sign in DAMAGE_SIGNS):
            return  # locked by a writer, unreadable, ...: MLflow reports those itself
        result = str(e)
    if result != "ok":
        raise StagewiseError(
            f"the MLflow store {db} is damaged ({result.splitlines()[0]}); restore it from a "
            "backup, or move it aside to start an empty store (its runs are then no longer listed)"
        )


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
