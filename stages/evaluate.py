"""evaluate: score the trained model on the valid split, and show where it fails.

Writes the task's metrics (DVC metrics + MLflow), its tables under plots/valid/ (per class,
fastai's top losses; for one class per image the confusion matrix and the most confused
pairs, for several labels F1 against the threshold, for regression every prediction) and
its figures into the MLflow run (pipeline.tasks.reports); with train.activation_stats,
Grad-CAM heatmaps of the top losses too.
"""

import logging

from pipeline.core.config import Config
from pipeline.core.io import write_csv, write_json
from pipeline.core.paths import ModelFiles, Paths
from pipeline.evaluate.gradcam import write_grad_cam
from pipeline.evaluate.scoring import headline, score_split
from pipeline.tracking.runs import trained_run
from stages.common import entrypoint

log = logging.getLogger("stagewise")


def run(cfg: Config, paths: Paths = Paths()) -> dict:
    run, info = trained_run(paths)
    scored = score_split(paths, "valid", cfg.eval, cfg.train.augment)
    report = scored.report
    worst = report.top_losses(scored, cfg.eval.top_losses)
    write_json(paths.valid_metrics, headline(scored.metrics))
    tables = report.tables(scored, worst)
    for table in tables:
        write_csv(paths.valid_plots / table.name, table.rows, columns=table.columns)
    run.log_metrics(report.mlflow_metrics(scored), info["epochs"])
    for name, figure in report.figures(scored, worst).items():
        run.log_figure(figure, f"valid/{name}")
    explained = report.cam_outputs(scored, worst)  # the output each heatmap explains
    write_grad_cam(
        paths.valid_grad_cam, run, cfg.train.activation_stats, ModelFiles(paths.model_dir),
        scored.data.images[[row["index"] for row in worst]], explained,
        [f"{row['predicted']}/{row['actual']}\n→ {scored.classes[i]}" for row, i in zip(worst, explained, strict=True)],
        f"Grad-CAM of the top losses (predicted/actual → the {report.column} explained)",
    )  # fmt: skip
    for table in tables:
        if table.logged:
            run.log_artifact(paths.valid_plots / table.name, "valid")
    for line in report.describe(scored):
        log.info(line)
    return scored.metrics


main = entrypoint(run)

if __name__ == "__main__":
    main()
