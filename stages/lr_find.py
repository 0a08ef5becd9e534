"""lr-find: suggest train.lr for the configured model and data (fastai's lr_find).

Writes the loss-vs-lr curve (a DVC plot and a PNG) and the suggestion (a DVC metric), and
logs both as an MLflow run of their own. Only the train keys that shape the loss curve are
its params, so sweeping train.lr or train.epochs does not rerun it.
"""

import logging
import math
from functools import partial

from pipeline.core.config import Config, to_dict
from pipeline.core.io import atomic_write, write_csv, write_json
from pipeline.core.paths import Paths
from pipeline.evaluate.plots import lr_find_figure
from pipeline.tracking.models import run_model_files
from pipeline.tracking.runs import source_tags, training_run
from pipeline.tracking.store import check_reachable
from pipeline.train.learner import create_learner, data_tags
from pipeline.train.lr_find import lr_find
from stages.common import entrypoint

log = logging.getLogger("stagewise")


def run(cfg: Config, paths: Paths = Paths()) -> float:
    check_reachable(paths)  # before minutes of work, not after them
    learner = create_learner(cfg, paths, partial(run_model_files, paths))
    found = lr_find(
        learner.model, learner.train, cfg.train, learner.normalizer, cfg.seed,
        pretrained=bool(cfg.model.weights), head=learner.head,
    )  # fmt: skip
    write_csv(
        paths.lr_find_curve,
        [
            {"lr": lr, "log10_lr": math.log10(lr), "loss": loss}
            for lr, loss in zip(found.lrs, found.losses, strict=True)
        ],
    )
    write_json(paths.lr_find_metrics, {"suggested_lr": found.suggestion})
    figure = lr_find_figure(found.lrs, found.losses, found.suggestion)
    atomic_write(paths.lr_find_plot, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    tags = {"stage": "lr_find", **source_tags("stages.lr_find"), **data_tags(paths, cfg.data)}
    with training_run(paths, to_dict(cfg), tags, f"lr_find-{cfg.model.arch}") as run:
        run.log_series({"lr_find_lr": found.lrs, "lr_find_loss": found.losses})
        run.log_metrics({"suggested_lr": found.suggestion})
        run.log_figure(figure, "lr_find.png")
    log.info(
        "lr_find suggests train.lr=%.2g (valley); curve in %s", found.suggestion, paths.lr_find_plot
    )
    return found.suggestion


main = entrypoint(run)

if __name__ == "__main__":
    main()
