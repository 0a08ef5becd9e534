"""A sweep in MLflow: one parent run, one child run per job, summarized at the end."""

from typing import Any

import mlflow
from mlflow.entities import RunStatus

from pipeline.core.direction import best_by
from pipeline.core.errors import StagewiseError
from pipeline.core.paths import PROJECT_ROOT, Paths
from pipeline.tracking.runs import Run, git_tags, source_tags
from pipeline.tracking.store import open_store


def start_sweep(
    paths: Paths,
    experiment: str,
    overrides: list[str],
    name: str | None = None,
    tags: dict[str, str] | None = None,
) -> Run:
    """Open the parent run of a sweep (of a Hydra multirun, or of stages.tune's study)."""
    store = open_store(paths)
    all_tags = {
        **source_tags("sweep"),
        **git_tags(PROJECT_ROOT),
        "sweep.overrides": " ".join(overrides),
        **(tags or {}),
    }
    created = store.client.create_run(
        store.experiment_id(experiment),
        run_name=(name or f"sweep {' '.join(overrides)}")[:250],
        tags=all_tags,
    )
    return Run(store, created.info.run_id)


def reattach_sweep(paths: Paths, run_id: str) -> Run:
    """The parent run of a sweep that goes on (a resumed study, another worker), RUNNING."""
    store = open_store(paths)
    try:
        status = store.client.get_run(run_id).info.status
    except mlflow.exceptions.MlflowException:
        raise StagewiseError(
            f"the study's MLflow parent run {run_id} is not in {store.uri}; use another tune.study"
        ) from None
    if status != RunStatus.to_string(RunStatus.RUNNING):
        store.client.update_run(run_id, status=RunStatus.to_string(RunStatus.RUNNING))
    return Run(store, run_id)


def finish_sweep(parent: Run, jobs: int, failed: int, metric: str) -> dict:
    """Summarize the sweep on its parent run (job counts, the best child by `metric`) and
    end it: FINISHED, or FAILED when no job succeeded."""
    client = parent.store.client
    experiment = client.get_run(parent.id).info.experiment_id
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.id}'")
    scored = [c for c in children if c.info.status == "FINISHED" and metric in c.data.metrics]
    # Jobs in other processes (parallel launchers) are counted by their runs only.
    failed_runs = sum(c.info.status == "FAILED" for c in children)
    summary: dict[str, Any] = {
        "jobs": max(jobs, len(children)),
        "failed_jobs": max(failed, failed_runs),
    }
    if scored:
        best = best_by(scored, metric, lambda c: c.data.metrics[metric])
        summary[f"best_{metric}"] = best.data.metrics[metric]
        parent.set_tags({"sweep.best_run_id": best.info.run_id})
    parent.log_metrics(summary)
    parent.end("FINISHED" if scored else "FAILED")
    return summary


def runs_of(paths: Paths, experiment: str, sweep: str | None) -> list[dict]:
    """The runs of a sweep (children of its parent run), or the training runs of a whole
    experiment (no sweep parents, no lr_find runs: they have no valid metrics to rank by)."""
    store = open_store(paths)
    found = store.client.get_experiment_by_name(experiment)
    if found is None:
        return []
    query = (
        f"tags.mlflow.parentRunId = '{sweep}'"
        if sweep
        else "tags.`sweep.overrides` IS NULL AND tags.stage = 'train'"
    )
    return [
        {
            "run_id": r.info.run_id,
            "status": r.info.status,
            "params": r.data.params,
            "metrics": r.data.metrics,
            "dataset_md5": r.data.tags.get("dataset.md5"),  # the raw dataset's version
        }
        for r in store.client.search_runs([found.experiment_id], query, max_results=10000)
    ]
