"""The team's holdout ledger, kept in the tracking server: every clone tracking into it
shares one record of how often the test split was scored (pipeline/evaluate/holdout.py keeps
a project's own ledger in a locked file when the store is local).

Each evaluation is one run of the experiment `stagewise-holdout`, its fields as the run's
tags. The server inserts a run and its tags in one database transaction, so a record is
written whole or not at all, and nothing is read-modified-written: two clones recording at
once both land, where a shared JSON document would keep only the later write. The ledger
of a test split is a search over those runs; deleted ones still count (a look at the test
set cannot be taken back).
"""

import functools
import os
from collections.abc import Callable

import mlflow
from mlflow.entities import RunStatus, ViewType

from pipeline.core.errors import StagewiseError
from pipeline.tracking.store import Store

EXPERIMENT = "stagewise-holdout"
TAG_PREFIX = "stagewise.holdout."
FIELDS = ("test_digest", "config_digest", "run_id", "time")
PAGE = 1000  # runs per search request


def server_ledger(store: Store) -> Callable[[dict[str, str]], list[dict[str, str]]] | None:
    """The ledger of store when it is a tracking server: a function that records an
    evaluation ({field: value} for FIELDS) and returns every evaluation of its test split.
    None for a local store, whose project keeps its own file."""
    return functools.partial(record, store) if store.is_server() else None


def record(store: Store, evaluation: dict[str, str]) -> list[dict[str, str]]:
    """Add evaluation unless its run is already recorded for that test split (a rerun of
    test-holdout); then the split's evaluations, searched after recording: of two clones
    recording at the same moment, the later search sees both."""
    try:
        experiment = store.experiment_id(EXPERIMENT)
        digest = evaluation["test_digest"]
        recorded = {e["run_id"] for e in evaluations(store, experiment, digest)}
        if evaluation["run_id"] not in recorded:
            tags = {TAG_PREFIX + field: evaluation[field] for field in FIELDS}
            name = f"test {digest[:12]} run {evaluation['run_id'][:8]}"
            created = store.client.create_run(experiment, run_name=name, tags=tags)
            store.client.set_terminated(
                created.info.run_id, RunStatus.to_string(RunStatus.FINISHED)
            )
        return evaluations(store, experiment, digest)
    except mlflow.exceptions.MlflowException as e:
        if e.error_code != "PERMISSION_DENIED":
            raise
        user = os.environ.get("MLFLOW_TRACKING_USERNAME", "this user")
        raise StagewiseError(
            f"the tracking server refused to record in the holdout ledger (experiment "
            f"'{EXPERIMENT}'): {user} needs EDIT permission on it; ask the server's admin"
        ) from None


def evaluations(store: Store, experiment: str, test_digest: str) -> list[dict[str, str]]:
    """The recorded evaluations of one test split, oldest first."""
    found, token = [], None
    while True:
        page = store.client.search_runs(
            [experiment],
            filter_string=f"tags.`{TAG_PREFIX}test_digest` = '{test_digest}'",
            run_view_type=ViewType.ALL,
            max_results=PAGE,
            order_by=["attributes.start_time ASC"],
            page_token=token,
        )
        found += [{f: run.data.tags[TAG_PREFIX + f] for f in FIELDS} for run in page]
        token = page.token
        if not token:
            return found
