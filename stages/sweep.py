"""A Hydra multirun sweep as one MLflow parent run, with each job's run as its child.

Installed by stages/common.py as a Hydra callback for every `-m` run. The parent records the
sweep's overrides; at the end it gets the number of jobs, how many failed, and the best job
by valid error rate.
"""

import atexit
import logging
import os
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from pipeline.core.paths import Paths
from pipeline.tracking.runs import SWEEP_RUN_ENV, Run
from pipeline.tracking.sweeps import finish_sweep, start_sweep
from stages import common

log = logging.getLogger("stagewise")


def chosen_hydra_overrides(config: DictConfig) -> list[str]:
    """The user's launcher and sweeper choices (not what stages/common.py adds itself)."""
    hydra_overrides = OmegaConf.select(config, "hydra.overrides.hydra") or []
    return [
        o for o in hydra_overrides if o.startswith(("hydra/", "hydra.launcher", "hydra.sweeper"))
    ]


class SweepRun(Callback):
    def __init__(self) -> None:
        self.parent: Run | None = None
        self.metric = "valid_error_rate"
        self.jobs = 0
        self.failed = 0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        overrides = [
            *chosen_hydra_overrides(config),
            *OmegaConf.select(config, "hydra.overrides.task"),
        ]
        experiment = OmegaConf.select(config, "tracking.experiment") or "stagewise"
        self.metric = OmegaConf.select(config, "compare.metric") or self.metric
        self.parent = start_sweep(Paths(), experiment, overrides)
        # Jobs (in this process or launched ones, which inherit the environment) attach to it.
        os.environ[SWEEP_RUN_ENV] = self.parent.id
        # Hydra skips on_multirun_end when the sweep dies (Ctrl-C, a crash): not left RUNNING.
        atexit.register(self.end_if_open)
        log.info("sweep %s: MLflow parent run %s", " ".join(overrides), self.parent.id)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        self.jobs += 1
        self.failed += job_return.status == JobStatus.FAILED  # crashed; bad input is counted below

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent:
            failed = self.failed + len(common.failed_jobs)
            summary = finish_sweep(self.parent, self.jobs, failed, self.metric)
            unseen = summary["failed_jobs"] - failed  # failed in launched processes
            common.failed_jobs.extend(["a launched job failed"] * unseen)
            log.info("sweep done: %s", summary)
            os.environ.pop(SWEEP_RUN_ENV, None)
            self.parent = None

    def end_if_open(self) -> None:
        if self.parent:
            self.parent.end("KILLED")
