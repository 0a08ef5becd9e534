"""compare: a sweep's runs side by side, best first.

    python -m stages.compare compare.sweep=<parent run id>   # the jobs of one Hydra sweep
    python -m stages.compare                                 # every run of tracking.experiment

Writes comparison/<id>.md and .csv (the params that differ, sorted by the metric) and
comparison/<id>.png (the metric against each swept param), and logs them to the sweep's
parent run.
"""

import logging

from pipeline.core.config import Config
from pipeline.core.errors import StagewiseError
from pipeline.core.io import atomic_write
from pipeline.core.paths import PROJECT_ROOT, Paths
from pipeline.evaluate.compare import metric_figure, runs_table
from pipeline.tracking.runs import Run
from pipeline.tracking.store import open_store
from pipeline.tracking.sweeps import runs_of
from stages.common import entrypoint

log = logging.getLogger("stagewise")


def run(cfg: Config, paths: Paths = Paths()) -> str:
    sweep, metric = cfg.compare.sweep, cfg.compare.metric
    runs = runs_of(paths, cfg.tracking.experiment, sweep)
    if not runs:
        raise StagewiseError(
            f"no runs found for {'sweep ' + sweep if sweep else cfg.tracking.experiment}"
        )
    if not any(metric in r["metrics"] for r in runs):
        logged = sorted({m for r in runs for m in r["metrics"] if m.startswith("valid_")})
        raise StagewiseError(
            f"compare.metric={metric}: none of the {len(runs)} run(s) logged it; they logged "
            f"{', '.join(logged) or 'no valid_ metric'}"
        )
    table = runs_table(runs, metric)
    name = sweep or cfg.tracking.experiment
    out = PROJECT_ROOT / "comparison" / name
    atomic_write(out.with_suffix(".csv"), lambda tmp: table.to_csv(tmp, index=False))
    atomic_write(
        out.with_suffix(".md"), lambda tmp: tmp.write_text(table.to_markdown(index=False) + "\n")
    )
    figure = metric_figure(table, metric)
    figure.savefig(out.with_suffix(".png"), dpi=100)
    if sweep:
        parent = Run(open_store(paths), sweep)
        for suffix in (".csv", ".md", ".png"):
            parent.log_artifact(out.with_suffix(suffix), "comparison")
    log.info("%d run(s), best first by %s:\n%s", len(table), metric, table.to_markdown(index=False))
    return str(out)


main = entrypoint(run)

if __name__ == "__main__":
    main()
