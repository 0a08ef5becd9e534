"""Figures for people (the MLflow UI); DVC renders its own plots from the CSV files."""

import numpy as np

from pipeline.core.figures import grid, pyplot


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
    """fastai's plot_top_losses: each image titled predicted/actual/loss[/probability]."""
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
        probability = f" / {row['probability']:.2f}" if "probability" in row else ""
        ax.set_title(
            f"{row['predicted'] or '(none)'}/{row['actual'] or '(none)'}\n"
            f"{row['loss']:.2f}{probability}",
            fontsize=9,
        )
    shown = "Loss/Probability" if rows and "probability" in rows[0] else "Loss"
    figure.suptitle(f"Prediction/Actual  {shown}", fontsize=10)
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


def threshold_figure(curve: list[dict], threshold: float, split: str):
    """fastai's threshold plot: F1 (samples) and accuracy_multi against the threshold, the
    model's threshold and the best one marked."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    xs = [row["threshold"] for row in curve]
    for metric in ("f1_samples", "accuracy_multi"):
        axes.plot(xs, [row[metric] for row in curve], label=metric)
    best = max(curve, key=lambda row: row["f1_samples"])
    axes.axvline(threshold, color="grey", linestyle="--", label=f"model's threshold {threshold:g}")
    axes.plot(
        [best["threshold"]], [best["f1_samples"]], "ro", label=f"best F1 at {best['threshold']:g}"
    )
    axes.set_xlabel("threshold")
    axes.set_ylabel("score")
    axes.set_title(f"scores against the threshold ({split})")
    axes.legend()
    figure.tight_layout()
    return figure


def predicted_vs_actual_figure(
    actual: np.ndarray, predicted: np.ndarray, targets: list[str], split: str
):
    """One scatter per target of predicted against actual values, with the diagonal."""
    plt = pyplot()
    n = len(targets)
    figure, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.2), squeeze=False)
    for j, (ax, name) in enumerate(zip(axes[0], targets, strict=True)):
        ax.scatter(actual[:, j], predicted[:, j], s=6, alpha=0.5)
        low = float(min(actual[:, j].min(), predicted[:, j].min()))
        high = float(max(actual[:, j].max(), predicted[:, j].max()))
        ax.plot([low, high], [low, high], color="grey", linewidth=1)
        ax.set_xlabel(f"actual {name}")
        ax.set_ylabel(f"predicted {name}")
        ax.set_title(name)
    figure.suptitle(f"predicted against actual ({split})", fontsize=10)
    figure.tight_layout()
    return figure


def grad_cam_figure(images: np.ndarray, heatmaps: np.ndarray, titles: list[str], heading: str):
    """Each image (N x H x W x C uint8) beside itself overlaid with its Grad-CAM heatmap
    (N x H x W in [0, 1]; red = what drove the output most)."""
    plt = pyplot()
    figure, axes = grid(plt, 2 * len(images), 6, 1.9, 2.1)
    for k, (image, heatmap, title) in enumerate(zip(images, heatmaps, titles, strict=True)):
        plain, overlaid = axes[2 * k], axes[2 * k + 1]
        for ax in (plain, overlaid):
            if image.shape[-1] == 1:
                ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255)
            else:
                ax.imshow(image)
            ax.axis("off")
        overlaid.imshow(heatmap, cmap="jet", alpha=0.5, vmin=0, vmax=1, interpolation="bilinear")
        plain.set_title(title, fontsize=8)
        overlaid.set_title("Grad-CAM", fontsize=8)
    figure.suptitle(heading, fontsize=10)
    figure.tight_layout()
    return figure
