"""evaluate: score the trained model on the valid split, and show where it fails.

Writes the metrics (DVC metrics + MLflow), the confusion matrix (DVC plot data + PNG), and
fastai's interpretation: the top losses (table + image grid) and the most confused pairs.
"""

import logging

from pipeline.core.config import Config
from pipeline.core.io import write_csv, write_json
from pipeline.core.paths import ModelFiles, Paths
from pipeline.evaluate.gradcam import write_grad_cam
from pipeline.evaluate.metrics import confusion_matrix, confusion_rows, most_confused
from pipeline.evaluate.plots import confusion_figure, top_losses_figure
from pipeline.evaluate.scoring import (
    describe,
    headline,
    mlflow_metrics,
    per_class_rows,
    score_split,
    top_losses,
)
from pipeline.tracking.runs import trained_run
from stages.common import entrypoint

log = logging.getLogger("stagewise")


def run(cfg: Config, paths: Paths = Paths()) -> dict:
    run, info = trained_run(paths)
    scored = score_split(paths, "valid", cfg.eval, cfg.train.augment)
    worst = top_losses(scored, cfg.eval.top_losses)
    confused = most_confused(scored.actual, scored.predicted, scored.classes)
    write_json(paths.valid_metrics, headline(scored.metrics))
    write_csv(paths.valid_per_class, per_class_rows(scored.metrics))
    write_csv(
        paths.valid_confusion, confusion_rows(scored.actual, scored.predicted, scored.classes)
    )
    write_csv(
        paths.valid_top_losses, [{k: v for k, v in row.items() if k != "index"} for row in worst]
    )
    write_csv(paths.valid_most_confused, confused, columns=["actual", "predicted", "count"])
    run.log_metrics(mlflow_metrics(scored), info["epochs"])
    figures = {
        "valid/confusion_matrix.png": confusion_figure(
            confusion_matrix(scored.actual, scored.predicted, len(scored.classes)),
            scored.classes,
            "valid",
        ),
        "valid/top_losses.png": top_losses_figure(scored.data.images, worst),
    }
    for name, figure in figures.items():
        run.log_figure(figure, name)
    write_grad_cam(  # where the model looked, for the predicted class (train.activation_stats)
        paths.valid_grad_cam, run, cfg.train.activation_stats, ModelFiles(paths.model_dir),
        scored.data.images[[row["index"] for row in worst]],
        [int(scored.predicted[row["index"]]) for row in worst],
        [f"{row['predicted']}/{row['actual']}" for row in worst],
        "Grad-CAM of the top losses (predicted/actual), for the predicted class",
    )  # fmt: skip
    for table in (paths.valid_top_losses, paths.valid_most_confused, paths.valid_per_class):
        run.log_artifact(table, "valid")
    log.info(describe(scored))
    for pair in confused[:3]:
        log.info("most confused: %(actual)s predicted as %(predicted)s, %(count)d time(s)", pair)
    return scored.metrics


main = entrypoint(run)

if __name__ == "__main__":
    main()
