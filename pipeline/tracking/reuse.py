"""Sweep jobs that reuse a finished training run instead of training again.

Every training run is tagged with its job key: a hash of what decides its result, as the
train stage declares it in dvc.yaml (the values of its params, the bytes of its code), and of
the data it reads. A sweep job (a Hydra multirun job, a stages.tune trial) whose key matches a
FINISHED training run of the experiment does not train: its child run points at that run
(`reused_from`) and carries its final metrics, so rerunning a crashed or extended sweep trains
only the jobs not yet done. Hydra's sweeps cannot resume, and DVC's run cache serves
`dvc repro` alone; a plain training run is never reused (DVC owns that case).
"""

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pipeline.core.config import Config, to_dict
from pipeline.core.errors import first_line
from pipeline.core.io import file_md5
from pipeline.core.paths import PROJECT_ROOT, Paths
from pipeline.tracking.runs import Run, training_run
from pipeline.tracking.store import open_store

log = logging.getLogger("stagewise")

JOB_KEY_TAG = "job.key"
REUSED_FROM_TAG = "reused_from"
# Set by stages.tune on a trial stopped early: its metrics are not a whole training's.
PRUNED_TAG = "tune.pruned"


def job_key(cfg: Config, paths: Paths, code_root: Path = PROJECT_ROOT) -> str:
    """sha256 (32 hex digits) of the train stage's params in dvc.yaml with their values, the
    bytes of its code deps there (under code_root: the code this process runs) and the data
    training reads (under paths.root). A missing data file counts as absent: no finished run
    has that key, and training then says which stage to run."""
    stage = yaml.safe_load((code_root / "dvc.yaml").read_text(encoding="utf-8"))["stages"]["train"]
    config = to_dict(cfg)
    # Not images.npy (GBs, hashed again at every training): the manifest carries the sha256 of
    # the store ingest wrote with it (pipeline.data.store.write_manifest), so its md5 covers it.
    data = (paths.manifest, paths.split, paths.normalize)
    inputs = {
        "params": {key: selected(config, key) for key in stage["params"]},
        "code": {
            name: file_md5(code_root / name) for name in stage["deps"] if name.endswith(".py")
        },
        "data": {path.name: file_md5(path) if path.exists() else "absent" for path in data},
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:32]


def selected(config: dict, key: str) -> Any:
    """config's value at a dotted key: "eval.threshold" -> config["eval"]["threshold"]."""
    for part in key.split("."):
        config = config[part]
    return config


@dataclass(frozen=True)
class FinishedRun:
    id: str
    metrics: dict[str, float]


def finished_run(paths: Paths, experiment: str, key: str) -> FinishedRun | None:
    """The newest FINISHED training run of the experiment with this job key (a training, not a
    reuse or a pruned trial), or None: also when the store cannot be searched, said in one
    line (the job then trains)."""
    query = (
        f"tags.`{JOB_KEY_TAG}` = '{key}' AND attributes.status = 'FINISHED' "
        f"AND tags.`{REUSED_FROM_TAG}` IS NULL AND tags.`{PRUNED_TAG}` IS NULL"
    )
    try:
        store = open_store(paths)
        found = store.client.get_experiment_by_name(experiment)
        runs = found and store.client.search_runs(
            [found.experiment_id], query, max_results=1, order_by=["attributes.start_time DESC"]
        )
    except Exception as e:  # any store, any driver: their errors have no common base
        log.warning("cannot look for a finished run to reuse (%s); training the job", first_line(e))
        return None
    return FinishedRun(runs[0].info.run_id, runs[0].data.metrics) if runs else None


def record_reuse(
    paths: Paths,
    config: dict,
    tags: dict[str, str],
    run_name: str,
    reused_from: str,
    metrics: dict[str, float],
) -> Run:
    """The job's run (a child of the sweep's parent, with the job's config as params), tagged
    with the run it reuses and ended FINISHED at once with metrics (that run's final ones)."""
    with training_run(paths, config, {**tags, REUSED_FROM_TAG: reused_from}, run_name) as run:
        run.log_metrics(metrics)
    return run
