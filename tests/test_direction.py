"""One notion of which way a metric improves, used by early stopping, keep-best, the sweep
summary, compare and the direction of stages.tune's study."""

import pytest

from pipeline.core.direction import best_by, higher_is_better, improved, optimization_direction
from pipeline.core.errors import StagewiseError
from pipeline.core.paths import Paths
from pipeline.evaluate.compare import runs_table
from tests.conftest import compose_config


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
        # the multi-label and regression tasks' metrics (pipeline/tasks)
        ("valid_f1_samples", True),
        ("valid_accuracy_multi", True),
        ("test_exact_match", True),
        ("test_roc_auc_macro", True),
        ("test_hamming_loss", False),
        ("valid_rmse", False),
        ("valid_mae", False),
        ("valid_r2", True),
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
def test_the_tune_study_follows_compare_metric(tmp_path, metric, direction):
    from pipeline.train.tune import open_study

    cfg = compose_config(f"compare.metric={metric}")
    study = open_study(cfg.tune, Paths(tmp_path), metric)
    assert study.direction.name.lower() == direction
    other = "valid_accuracy" if metric == "valid_error_rate" else "valid_error_rate"
    with pytest.raises(StagewiseError, match=rf"compare\.metric={other} wants"):
        open_study(cfg.tune, Paths(tmp_path), other)  # resuming it the other way round
