"""Per-job overhead of a stage-level Hydra sweep: 8 one-epoch digits jobs, measured in one run.

Runs `python -m stages.train -m train.lr=<8 values> train.epochs=1` on the pipeline's current
data (run `bash scripts/run.sh` first), then reads each child run's epoch time from MLflow.
Overhead = sweep wall time minus the time spent in training epochs (start-up, data loading,
MLflow logging, model packaging), printed as a share of the sweep and per job.
"""

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.core.paths import Paths  # noqa: E402
from pipeline.tracking.store import open_store  # noqa: E402

LRS = ["0.001", "0.002", "0.003", "0.004", "0.005", "0.006", "0.007", "0.008"]


def main() -> None:
    start, start_epoch = time.perf_counter(), time.time()
    subprocess.run(
        [sys.executable, "-m", "stages.train", "-m", f"train.lr={','.join(LRS)}", "train.epochs=1"],
        cwd=ROOT, check=True, capture_output=True, env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    wall = time.perf_counter() - start
    client = open_store(Paths()).client
    experiment = client.get_experiment_by_name("stagewise")
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`sweep.overrides` != ''",
                                   order_by=["attributes.start_time DESC"], max_results=1)  # fmt: skip
    children = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    training = sum(child.data.metrics["epoch_seconds"] for child in children)
    overhead = wall - training
    first_start = min(child.info.start_time for child in children) / 1000
    in_runs = sum((c.info.end_time - c.info.start_time) / 1000 for c in children)
    per_job = (in_runs - training) / len(children)
    print(f"{len(children)} jobs in {wall:.1f}s; training epochs {training:.1f}s; "
          f"overhead {overhead:.1f}s = {overhead / wall:.0%} of the sweep (goal <= 10%)")  # fmt: skip
    print(f"  of which process start-up (imports, Hydra, the parent run) until the first job: "
          f"{first_start - start_epoch:.1f}s once")  # fmt: skip
    print(f"  and per job, inside its MLflow run but outside training epochs (run creation, "
          f"params, model packaging): {per_job:.2f}s = {per_job / (in_runs / len(children)):.0%} of a job")  # fmt: skip


if __name__ == "__main__":
    main()
