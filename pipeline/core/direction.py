"""Which way is better for a metric: the one notion shared by early stopping, keep-best, the
sweep summary, `stages.compare` and the direction of `stages.tune`'s study."""

from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")

# Metrics (by the words in their names) where higher is better; every other one is a loss
# or an error, where lower is better.
HIGHER_IS_BETTER = ("accuracy", "precision", "recall", "f1", "auc", "r2", "match")


def higher_is_better(metric: str) -> bool:
    words = metric.lower().replace("-", "_").split("_")
    return any(word in HIGHER_IS_BETTER for word in words)


def improved(value: float, best: float | None, metric: str) -> bool:
    if best is None:
        return True
    return value > best if higher_is_better(metric) else value < best


def best_by(items: Iterable[T], metric: str, value: Callable[[T], float]) -> T:
    """The item with the best value of metric."""
    pick = max if higher_is_better(metric) else min
    return pick(items, key=value)


def optimization_direction(metric: str) -> str:
    """Optuna's word for the direction: maximize or minimize."""
    return "maximize" if higher_is_better(metric) else "minimize"
