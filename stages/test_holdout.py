"""test-holdout: the only code that reads the test split; scores the final model once."""

import logging

from pipeline import tracking
from pipeline.config import Config
from pipeline.evaluation import headline, mlflow_metrics, score_split
from pipeline.io import read_json, write_json
from pipeline.paths import ModelFiles, Paths
from stages.common import entrypoint

log = logging.getLogger("stagewise")


def run(cfg: Config, paths: Paths = Paths()) -> dict:
    run_info = read_json(ModelFiles(paths.model_dir).run, "train")
    tracking.check_run(paths, run_info["run_id"])
    scored = score_split(paths, "test", cfg.eval.batch_size)
    write_json(paths.test_metrics, headline(scored.metrics))
    tracking.log_metrics(paths, run_info["run_id"], mlflow_metrics(scored), run_info["epochs"])
    tracking.set_tags(paths, run_info["run_id"], {"test_holdout.used": "true"})
    tracking.log_split_inputs(paths, run_info["run_id"], {"test": "testing"})
    log.info(
        "test accuracy %.4f (error rate %.4f) on %d held-out images",
        scored.metrics["accuracy"],
        scored.metrics["error_rate"],
        scored.metrics["images"],
    )
    return scored.metrics


main = entrypoint(run)

if __name__ == "__main__":
    main()
