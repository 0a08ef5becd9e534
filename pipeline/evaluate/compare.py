"""Comparing runs: a table of a sweep's (or any set of) runs, best first, with only the params
that differ between them, and a plot of the metric against each of those params."""

import pandas as pd

from pipeline.core.direction import higher_is_better


def runs_table(runs: list[dict], metric: str) -> pd.DataFrame:
    """runs: [{"run_id", "status", "params": {...}, "metrics": {...}[, "dataset_md5"]}] -> one
    row per run, sorted by metric (runs without it last), with the params whose values differ
    and, when the runs used different versions of the dataset, its DVC md5 (dataset.md5): two
    runs on the same folder before and after it changed have the same params."""
    params = pd.DataFrame([{**r["params"], "dataset.md5": r.get("dataset_md5")} for r in runs])
    differing = [c for c in sorted(params.columns) if params[c].nunique(dropna=False) > 1]
    table = pd.DataFrame(
        {
            "run_id": [r["run_id"] for r in runs],
            "status": [r["status"] for r in runs],
            metric: [r["metrics"].get(metric) for r in runs],
        }
    )
    table = pd.concat([table, params[differing].reset_index(drop=True)], axis=1)
    return table.sort_values(
        metric, ascending=not higher_is_better(metric), na_position="last", ignore_index=True
    )


def metric_figure(table: pd.DataFrame, metric: str, max_panels: int = 8):
    """The metric against each differing param (the first max_panels), one panel each."""
    from pipeline.core.figures import pyplot

    plt = pyplot()
    params = [c for c in table.columns if c not in ("run_id", "status", metric)][:max_panels]
    figure, axes = plt.subplots(
        1, max(len(params), 1), figsize=(4 * max(len(params), 1), 3.2), squeeze=False
    )
    scored = table[pd.to_numeric(table[metric], errors="coerce").notna()]
    y = scored[metric].astype(float)
    for ax, param in zip(axes.flat, params, strict=False):
        values = pd.to_numeric(scored[param], errors="coerce")
        x = (
            values
            if values.notna().all()
            else scored[param].astype(object).fillna("(unset)").map(str)
        )
        ax.scatter(x, y)
        ax.set_xlabel(param)
        ax.set_ylabel(metric)
        if values.notna().all() and (values > 0).all() and values.max() / values.min() >= 10:
            ax.set_xscale("log")
    figure.tight_layout()
    return figure
