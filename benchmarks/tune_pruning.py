"""A 16-trial stages.tune search with the median pruner vs without, on the digits data.

Same space, sampler seed and trial budget; the data stages run once into a temporary project
(its own MLflow store and optuna.db). Prints each search's wall time, best valid error rate
and pruned trials. Model and epochs: small_cnn at widths [16, 32], 6 epochs (argv overrides).
"""

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402

from pipeline.core.paths import Paths  # noqa: E402
from pipeline.train.tune import counts, open_study  # noqa: E402
from stages import ingest, normalize_stats, split, tune  # noqa: E402
from stages.common import validated  # noqa: E402

SETTINGS = ["model.widths=[16,32]", "train.epochs=6", "tune.trials=16",
            "tune.space.train.lr.low=1e-4", "tune.space.train.lr.high=0.1"]  # fmt: skip


def config(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base=None):
        return validated(compose(config_name="config", overrides=[*SETTINGS, *overrides]))


def main() -> None:
    paths = Paths(Path(tempfile.mkdtemp(prefix="tune-pruning-")))
    for stage in (ingest, split, normalize_stats):
        stage.run(config(), paths)
    for pruner in ("none", "median"):
        cfg = config(f"tune.pruner={pruner}", f"tune.study={pruner}", *sys.argv[1:])
        start = time.perf_counter()
        best = tune.run(cfg, paths)
        wall = time.perf_counter() - start
        pruned = counts(open_study(cfg.tune, paths, cfg.compare.metric))["pruned"]
        print(f"pruner={pruner:6s} 16 trials in {wall:6.1f}s, best valid_error_rate {best:.4f}, "
              f"{pruned} pruned", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
