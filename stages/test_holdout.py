"""test-holdout: the only code that reads the test split; scores the final model once."""

import logging

from pipeline import tracking
from pipeline.config import Config
from pipeline.evaluation import describe, headline, mlflow_metrics, score_split
from pipeline.io import write_json
from pipeline.paths import Paths
from stages.common import entrypoint

log = logging.getLogger("stagewise")


def run(cfg: Config, paths: Paths = Paths()) -> dict:
    run_info = tracking.trained_run(paths)
    scored = score_split(paths, "test", cfg.eval)
    write_json(paths.test_metrics, headline(scored.metrics))
    tracking.log_metrics(paths, run_info["run_id"], mlflow_metrics(scored), run_info["epochs"])
    tracking.set_tags(paths, run_info["run_id"], {"test_holdout.used": "true"})
    tracking.log_split_inputs(paths, run_info["run_id"], {"test": "testing"})
    log.info(describe(scored))
    return scored.metrics


main = entrypoint(run)

if __name__ == "__main__":
    main()
