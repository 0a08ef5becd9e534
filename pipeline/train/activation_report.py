"""The files of train.activation_stats: what ActivationStats recorded (CSV + PNG) and the first
convolution's filters, written into one folder and logged into the training's MLflow run."""

import shutil
from pathlib import Path

from torch import nn

from pipeline.core.io import atomic_write, write_csv
from pipeline.tracking.runs import Run
from pipeline.train.activation_figures import (
    color_dim_figure,
    filters_figure,
    grad_norms_figure,
    layer_stats_figure,
)
from pipeline.train.activations import HIST_MAX, HIST_MIN, ActivationStats

ARTIFACT_FOLDER = "train/activations"
# The folder always holds this note: DVC warns about an empty output folder.
ABOUT = "What train.activation_stats recorded during training (nothing when it is off: {}).\n"


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d] | None:
    return next(((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)


def write_activation_report(
    folder: Path, stats: ActivationStats | None, model: nn.Module, run: Run
) -> None:
    """stats.csv, histograms.csv, grad_norms.csv and their figures (layer_stats.png,
    color_dim.png, grad_norms.png) plus first_conv_filters.png, in folder and in the run.
    folder (a DVC output) exists afterwards either way and holds only this run's files: only
    README.txt when stats is None (train.activation_stats off)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    (folder / "README.txt").write_text(ABOUT.format("off" if stats is None else "on"))
    if stats is None:
        return
    labels = dict(zip(stats.names, stats.labels(), strict=True))
    rows = stats.stats_rows()
    write_csv(folder / "stats.csv", rows)
    write_csv(folder / "histograms.csv", stats.histogram_rows())
    write_csv(folder / "grad_norms.csv", stats.grad_rows, columns=["epoch", "layer", "grad_norm"])
    figures = {
        "layer_stats.png": layer_stats_figure(rows, labels),
        "color_dim.png": color_dim_figure(*stats.histograms(), labels, (HIST_MIN, HIST_MAX)),
        "grad_norms.png": grad_norms_figure(stats.grad_rows, labels),
    }
    if conv := first_conv(model):
        name, layer = conv
        weight = layer.weight.detach().float().cpu().numpy()
        title = f"first convolution {name}: {weight.shape[0]} filters of {weight.shape[1]}x{weight.shape[2]}x{weight.shape[3]}"
        figures["first_conv_filters.png"] = filters_figure(weight, title)
    for name, figure in figures.items():
        atomic_write(folder / name, lambda tmp, f=figure: f.savefig(tmp, format="png", dpi=100))
    for path in sorted(folder.iterdir()):
        if path.suffix in (".csv", ".png"):
            run.log_artifact(path, ARTIFACT_FOLDER)
