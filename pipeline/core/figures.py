"""matplotlib for files (no display), and a grid of panels: shared by the figures of
training (pipeline/train/activation_figures.py) and of evaluation (pipeline/evaluate/plots.py)."""


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


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
