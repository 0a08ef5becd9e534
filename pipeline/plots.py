"""Figures for people (the MLflow UI); DVC renders its own plots from the CSV files."""

import numpy as np

from pipeline.metrics import confusion_matrix


def confusion_figure(actual: np.ndarray, predicted: np.ndarray, classes: list[str], title: str):
    """A matplotlib figure of the confusion matrix with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    counts = confusion_matrix(actual, predicted, len(classes))
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
