"""Figures for people (the MLflow UI); DVC renders its own plots from the CSV files."""

import numpy as np


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def confusion_figure(counts: np.ndarray, classes: list[str], title: str):
    """A matplotlib figure of a confusion matrix (counts[actual, predicted]) with the counts
    in the cells."""
    plt = pyplot()
    size = max(4.0, 0.45 * len(classes) + 2)
    figure, axes = plt.subplots(figsize=(size, size))
    axes.imshow(counts, cmap="Blues")
    axes.set_xticks(range(len(classes)), classes, rotation=90)
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("actual")
    axes.set_title(f"confusion matrix ({title})")
    threshold = counts.max() / 2
    for (i, j), n in np.ndenumerate(counts):
        if n:
            axes.text(
                j,
                i,
                str(n),
                ha="center",
                va="center",
                color="white" if n > threshold else "black",
                fontsize=8,
            )
    figure.tight_layout()
    return figure


def top_losses_figure(images: np.ndarray, rows: list[dict]):
    """fastai's plot_top_losses: each image titled predicted/actual/loss/probability."""
    plt = pyplot()
    columns = min(4, max(len(rows), 1))
    n_rows = max(1, -(-len(rows) // columns))
    figure, axes = plt.subplots(
        n_rows, columns, figsize=(2.6 * columns, 2.9 * n_rows), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, rows, strict=False):
        image = images[row["index"]]
        if image.shape[-1] == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(image)
        ax.set_title(
            f"{row['predicted']}/{row['actual']}\n{row['loss']:.2f} / {row['probability']:.2f}",
            fontsize=9,
        )
    figure.suptitle("Prediction/Actual  Loss/Probability", fontsize=10)
    figure.tight_layout()
    return figure


def lr_find_figure(lrs: list[float], losses: list[float], suggestion: float):
    """fastai's lr_find plot: smoothed loss against learning rate, log scale, the pick marked."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    axes.plot(lrs, losses)
    axes.set_xscale("log")
    axes.set_xlabel("learning rate")
    axes.set_ylabel("loss (smoothed)")
    below = [loss for lr, loss in zip(lrs, losses, strict=True) if lr <= suggestion]
    axes.plot(
        [suggestion], [below[-1] if below else losses[0]], "ro", label=f"valley {suggestion:.2g}"
    )
    axes.legend()
    axes.set_title("lr_find")
    figure.tight_layout()
    return figure
