"""evaluate: score the trained model on the valid split; metrics, confusion matrix, MLflow."""

import logging

from pipeline import tracking
from pipeline.config import Config
from pipeline.evaluation import describe, headline, mlflow_metrics, per_class_rows, score_split
from pipeline.io import write_csv, write_json
from pipeline.metrics import confusion_rows
from pipeline.paths import Paths
from pipeline.plots import confusion_figure
from stages.common import entrypoint

log = logging.getLogger("stagewise")


def run(cfg: Config, paths: Paths = Paths()) -> dict:
    run_info = tracking.trained_run(paths)
    scored = score_split(paths, "valid", cfg.eval.batch_size)
    write_json(paths.valid_metrics, headline(scored.metrics))
    write_csv(paths.valid_per_class, per_class_rows(scored.metrics))
    write_csv(
        paths.valid_confusion, confusion_rows(scored.actual, scored.predicted, scored.classes)
    )
    tracking.log_metrics(paths, run_info["run_id"], mlflow_metrics(scored), run_info["epochs"])
    figure = confusion_figure(scored.actual, scored.predicted, scored.classes, "valid")
    tracking.log_figure(paths, run_info["run_id"], figure, "valid/confusion_matrix.png")
    log.info(describe(scored))
    return scored.metrics


main = entrypoint(run)

if __name__ == "__main__":
    main()
