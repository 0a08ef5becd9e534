"""One notion of which way a metric improves, used by early stopping, keep-best, the sweep
summary, compare and the Optuna preset."""

import pytest
from hydra import compose, initialize_config_dir

from pipeline.core.direction import best_by, higher_is_better, improved, optimization_direction
from pipeline.core.paths import PROJECT_ROOT
from pipeline.evaluate.compare import runs_table


@pytest.mark.parametrize(
    ("metric", "higher"),
    [
        ("valid_accuracy", True),
        ("test_f1_macro", True),
        ("valid_precision_macro", True),
        ("valid_error_rate", False),
        ("valid_loss", False),
        ("train_loss", False),
        ("test_log_loss", False),
    ],
)
def test_direction_by_metric_name(metric, higher):
    assert higher_is_better(metric) is higher
    assert improved(2.0, 1.0, metric) is higher
    assert best_by([1.0, 3.0, 2.0], metric, float) == (3.0 if higher else 1.0)
    assert optimization_direction(metric) == ("maximize" if higher else "minimize")


def test_compare_sorts_best_first_in_the_metric_direction():
    runs = [
        {"run_id": r, "status": "FINISHED", "params": {"lr": r}, "metrics": {m: v for m in ms}}
        for r, v, ms in [("a", 0.9, ["valid_accuracy"]), ("b", 0.95, ["valid_accuracy"])]
    ]
    assert list(runs_table(runs, "valid_accuracy")["run_id"]) == ["b", "a"]


@pytest.mark.parametrize(
    ("metric", "direction"), [("valid_error_rate", "minimize"), ("valid_accuracy", "maximize")]
)
def test_the_optuna_preset_follows_compare_metric(metric, direction):
    import stages.sweep  # noqa: F401  (registers the resolver the preset uses)

    with initialize_config_dir(config_dir=str(PROJECT_ROOT / "conf"), version_base=None):
        cfg = compose(
            config_name="config",
            overrides=["hydra/sweeper=stagewise_optuna", f"compare.metric={metric}"],
            return_hydra_config=True,
        )
    assert cfg.hydra.sweeper.direction == direction
