"""Figures of train.activation_stats (pipeline/train/activations.py): layer statistics,
fastai's colorful dimension, gradient norms and the first convolution's filters."""

import numpy as np

from pipeline.core.figures import grid, pyplot


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
