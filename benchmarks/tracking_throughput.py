"""Tracking into the project's sqlite store vs a tracking server, side by side with ratios.

- Metric logging throughput: EPOCHS epochs of METRICS per-epoch metrics through MetricBuffer,
  with one write per epoch (interval 0: the worst case, a store call each epoch) and batched
  (one write at the end).
- An 8-job parallel sweep's wall time: `python -m stages.train -m hydra/launcher=parallel
  hydra.launcher.n_jobs=8 seed=0,...,7` of tiny trainings (tests/project.py's TINY) in a
  temporary project copy whose data stages ran first; each sweep is checked to have 8
  FINISHED children.

Both stores are used once before they are timed (the sqlite file and its tables exist, the
experiment too). The server is the one MLFLOW_TRACKING_URI and MLflow's credential variables
name, or else one this script starts with scripts/tracking_server.sh in a temporary folder
(its defaults, STAGEWISE_SERVER_WORKERS and the rest apply) and stops at the end:

    python benchmarks/tracking_throughput.py

Most of its time is the two sweeps: 6 minutes in all on the shared 2 cores under a load
average of ~10 (one sweep took 41 s at a load average of 4-6). Prints the load average before
and after: other work on the machine slows both columns.
"""

import contextlib
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core.paths import Paths  # noqa: E402
from pipeline.tracking.runs import MetricBuffer, Run  # noqa: E402
from pipeline.tracking.store import Store, open_store  # noqa: E402
from tests.project import TINY, ProjectCopy  # noqa: E402

EPOCHS, METRICS = 100, 6
JOBS = 8
EXPERIMENT = "tracking-throughput"
CREDENTIALS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def logging_seconds(store: Store, interval: float) -> float:
    """Seconds to log EPOCHS x METRICS metrics into a new run of store."""
    run = Run(store, store.client.create_run(store.experiment_id(EXPERIMENT)).info.run_id)
    start = time.perf_counter()
    with MetricBuffer(run, interval) as buffer:
        for epoch in range(1, EPOCHS + 1):
            buffer.log({f"m{i}": epoch / (i + 1) for i in range(METRICS)}, epoch)
    seconds = time.perf_counter() - start
    run.end("FINISHED")
    return seconds


def sweep_seconds(project: ProjectCopy, store: Store, tracking: dict[str, str]) -> float:
    """Wall seconds of a JOBS-job parallel sweep into store (tracking: its variables, none
    for the project's sqlite store); exits unless all its jobs' runs FINISHED."""
    seeds = ",".join(str(seed) for seed in range(JOBS))
    command = [
        sys.executable, "-m", "stages.train", "-m", "hydra/launcher=parallel",
        f"hydra.launcher.n_jobs={JOBS}", f"seed={seeds}", f"tracking.experiment={EXPERIMENT}",
    ]  # fmt: skip
    start = time.perf_counter()
    result = subprocess.run(
        command, cwd=project.root, env={**project.env(), **tracking}, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    client, experiment = store.client, store.experiment_id(EXPERIMENT)
    (parent,) = client.search_runs(
        [experiment], "tags.`sweep.overrides` LIKE '%seed=%'", max_results=1,
        order_by=["attributes.start_time DESC"],
    )  # fmt: skip
    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    finished = sum(child.info.status == "FINISHED" for child in children)
    if result.returncode != 0 or finished != JOBS:
        sys.exit(f"the sweep failed ({finished}/{JOBS} runs FINISHED):\n{result.stderr[-3000:]}")
    return seconds


def measure(project: ProjectCopy, tracking: dict[str, str]) -> dict[str, float]:
    """The numbers of one store: the project's sqlite one when tracking is empty."""
    with environment(tracking):
        store = open_store(Paths(project.root))
        store.experiment_id(EXPERIMENT)
        numbers = {}
        for label, interval in (("a write per epoch", 0.0), ("batched", 3600.0)):
            seconds = logging_seconds(store, interval)
            numbers[f"metrics/s, {label}"] = EPOCHS * METRICS / seconds
            if interval == 0:
                numbers[f"ms a write, {label}"] = 1000 * seconds / EPOCHS
        numbers[f"{JOBS}-job parallel sweep, s"] = sweep_seconds(project, store, tracking)
    return numbers


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in ("MLFLOW_TRACKING_URI", *CREDENTIALS)}
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            os.environ.pop(key, None)
            if value is not None:
                os.environ[key] = value


@contextlib.contextmanager
def tracking_server() -> Iterator[dict[str, str]]:
    """The user's server (MLFLOW_TRACKING_URI), or a temporary one of tracking_server.sh."""
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        yield {"MLFLOW_TRACKING_URI": uri, **{k: os.environ[k] for k in CREDENTIALS}}
        return
    folder = tempfile.mkdtemp(prefix="stagewise-server-")  # PostgreSQL's user must reach it
    script = ["bash", str(ROOT / "scripts" / "tracking_server.sh")]
    env = {**os.environ, "STAGEWISE_SERVER_DIR": folder}
    try:
        started = subprocess.run([*script, "start"], env=env, capture_output=True, text=True)
        if started.returncode != 0:
            sys.exit(started.stderr)
        lines = Path(folder, "credentials.env").read_text().splitlines()
        uri = re.search(r"MLFLOW_TRACKING_URI=(\S+)", started.stdout).group(1)
        yield {"MLFLOW_TRACKING_URI": uri, **dict(line.split("=", 1) for line in lines)}
    finally:
        subprocess.run([*script, "stop"], env=env, capture_output=True)
        subprocess.run(["rm", "-rf", folder], check=False)


def load() -> str:
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


def main() -> None:
    print(f"load average (1/5/15 min) at start: {load()}")
    with tempfile.TemporaryDirectory() as folder, tracking_server() as server:
        project = ProjectCopy.create(Path(folder) / "project")
        project.compose(*TINY)
        project.run("dvc", "repro", "normalize-stats")
        workers = os.environ.get("STAGEWISE_SERVER_WORKERS", "the script's default")
        print(f"server: {server['MLFLOW_TRACKING_URI']} ({workers} workers if started here)")
        sqlite = measure(project, {})
        remote = measure(project, server)
    print(f"{'':34} {'sqlite':>9} {'server':>9} {'server/sqlite':>14}")
    for name, value in sqlite.items():
        print(f"{name:34} {value:9.1f} {remote[name]:9.1f} {remote[name] / value:14.2f}")
    print(f"load average at end: {load()}")


if __name__ == "__main__":
    main()
