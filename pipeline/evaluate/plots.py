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


def grid(plt, n: int, columns: int, width: float, height: float):
    """A figure with n panels in rows of `columns` (unused panels hidden), and the panels."""
    columns = max(1, min(columns, n))
    rows = max(1, -(-n // columns))
    figure, axes = plt.subplots(
        rows, columns, figsize=(width * columns, height * rows), squeeze=False
    )
    for ax in axes.flat[n:]:
        ax.axis("off")
    return figure, list(axes.flat[:n])


def layer_stats_figure(rows: list[dict], labels: dict[str, str]):
    """fastai's plot_layer_stats for every hooked layer at once: mean, std and the share near
    zero of each layer's output over the training batches, one line per layer."""
    plt = pyplot()
    figure, axes = plt.subplots(1, 3, figsize=(15, 4))
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, max(len(labels), 1)))
    for (layer, label), color in zip(labels.items(), colors, strict=True):
        mine = [row for row in rows if row["layer"] == layer]
        for ax, stat in zip(axes, ("mean", "std", "near_zero"), strict=True):
            ax.plot([r["batch"] for r in mine], [r[stat] for r in mine], color=color, label=label)
    for ax, title in zip(
        axes, ("mean", "std", "share near zero ([0, 0.5) of [0, 10])"), strict=True
    ):
        ax.set_title(title)
        ax.set_xlabel("training batch")
    axes[-1].set_ylim(-0.02, 1.02)
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    figure.suptitle("activations of each layer during training")
    figure.tight_layout()
    return figure


def color_dim_figure(
    batches: dict[str, np.ndarray], counts: dict[str, np.ndarray], labels: dict[str, str],
    value_range: tuple[float, float],
):  # fmt: skip
    """fastai's 'colorful dimension': for each layer, the log of its output histogram (bins
    up the y axis, one column per recorded training batch). Bright at the bottom = many
    activations near zero; a healthy layer spreads up smoothly, without collapse cycles."""
    plt = pyplot()
    figure, axes = grid(plt, len(labels), 3, 4.4, 3.0)
    for ax, (layer, label) in zip(axes, labels.items(), strict=True):
        ax.set_title(label, fontsize=9)
        if not len(batches[layer]):
            ax.text(0.5, 0.5, "not recorded", ha="center", va="center", transform=ax.transAxes)
            continue
        ax.imshow(
            np.log1p(counts[layer].T),
            origin="lower",
            aspect="auto",
            cmap="viridis",
            interpolation="nearest",
            extent=(batches[layer][0] - 0.5, batches[layer][-1] + 0.5, *value_range),
        )
        ax.set_xlabel("training batch", fontsize=8)
        ax.set_ylabel("activation", fontsize=8)
        ax.tick_params(labelsize=7)
    figure.suptitle("colorful dimension: log(1 + histogram of each layer's output)")
    figure.tight_layout()
    return figure


def grad_norms_figure(rows: list[dict], labels: dict[str, str]):
    """Each layer's gradient L2 norm per epoch (the mean over its steps), log scale."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(8, 4.5))
    colors = plt.get_cmap("viridis")(np.linspace(0, 0.9, max(len(labels), 1)))
    for (layer, label), color in zip(labels.items(), colors, strict=True):
        mine = [row for row in rows if row["layer"] == layer]
        axes.plot(
            [r["epoch"] for r in mine], [r["grad_norm"] for r in mine], "o-", color=color,
            label=label,
        )  # fmt: skip
    axes.set_yscale("log")
    axes.set_xlabel("epoch")
    axes.set_ylabel("gradient L2 norm (mean over steps)")
    axes.xaxis.get_major_locator().set_params(integer=True)
    axes.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    axes.set_title("gradient norm of each layer")
    figure.tight_layout()
    return figure


def filters_figure(weight: np.ndarray, title: str):
    """The filters of a convolution (out x in x kh x kw), each scaled to [0, 1] on its own:
    RGB for 3 input channels, grey otherwise (the mean over the input channels)."""
    plt = pyplot()
    n = weight.shape[0]
    columns = int(np.ceil(np.sqrt(n)))
    figure, axes = grid(plt, n, columns, 1.0, 1.0)
    low = weight.min(axis=(1, 2, 3), keepdims=True)
    high = weight.max(axis=(1, 2, 3), keepdims=True)
    scaled = (weight - low) / np.maximum(high - low, 1e-12)
    for ax, kernel in zip(axes, scaled, strict=True):
        if kernel.shape[0] == 3:
            ax.imshow(kernel.transpose(1, 2, 0), interpolation="nearest")
        else:
            ax.imshow(kernel.mean(axis=0), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    figure.suptitle(title, fontsize=10)
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
