"""Metric logging throughput: the project's sqlite store vs a tracking server.

Logs EPOCHS epochs of METRICS per-epoch metrics through MetricBuffer, twice per store: one write
per epoch (interval 0: the worst case, a store call each epoch) and batched (one write at the
end). The server is the one MLFLOW_TRACKING_URI and MLflow's credential variables name, e.g.

    bash scripts/tracking_server.sh start && export MLFLOW_TRACKING_URI=... && set -a &&
    . /tmp/stagewise-server/credentials.env && set +a && python benchmarks/tracking_throughput.py

Prints metrics/s and ms per write for each; under a minute.
"""

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core.paths import Paths  # noqa: E402
from pipeline.tracking.runs import MetricBuffer, Run  # noqa: E402
from pipeline.tracking.store import Store, open_store  # noqa: E402

EPOCHS, METRICS = 200, 6


def measure(store: Store, interval: float) -> float:
    """Seconds to log EPOCHS x METRICS metrics into a new run of store."""
    experiment = store.experiment_id("tracking-throughput")
    run = Run(store, store.client.create_run(experiment).info.run_id)
    start = time.perf_counter()
    with MetricBuffer(run, interval) as buffer:
        for epoch in range(1, EPOCHS + 1):
            buffer.log({f"m{i}": epoch / (i + 1) for i in range(METRICS)}, epoch)
    seconds = time.perf_counter() - start
    run.end("FINISHED")
    return seconds


def report(name: str, store: Store) -> None:
    for label, interval in (("a write per epoch", 0.0), ("batched", 3600.0)):
        seconds = measure(store, interval)
        writes = EPOCHS if interval == 0 else 1
        print(
            f"{name:7} {label:17} {EPOCHS * METRICS / seconds:9.0f} metrics/s  "
            f"{1000 * seconds / writes:7.1f} ms a write"
        )


def main() -> None:
    server = os.environ.pop("MLFLOW_TRACKING_URI", None)
    with tempfile.TemporaryDirectory() as folder:
        report("sqlite", open_store(Paths(Path(folder))))
        if server is None:
            print("server  (set MLFLOW_TRACKING_URI to a tracking server to compare)")
            return
        os.environ["MLFLOW_TRACKING_URI"] = server
        report("server", open_store(Paths(Path(folder))))


if __name__ == "__main__":
    main()
