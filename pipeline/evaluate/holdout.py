"""The test split's ledger: every evaluation of the held-out test set, per test-split digest.

fastai's rule is that the test set is looked at once, at the end; each further look at it,
with another model configuration, makes its score an optimistic one. Looking again is
allowed, but it is recorded (data/holdout_ledger.json, tracked in git, and the MLflow run)
and warned about loudly. With a tracking server the ledger is the server's instead
(pipeline/tracking/ledger.py, handed in by the stage): one per team, not one per clone.
"""

from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from filelock import FileLock, Timeout

from pipeline.core.errors import StagewiseError
from pipeline.core.io import read_json, write_json

# Recording takes milliseconds; a lock held this long belongs to a stuck process.
LOCK_TIMEOUT_S = 120


@dataclass(frozen=True)
class Evaluation:
    test_digest: str  # which images: the digest of the test split's ids
    config_digest: str  # which model configuration (data, split, model, training, seed)
    run_id: str
    time: str


def new_evaluation(test_digest: str, trained_config: str, run_id: str) -> Evaluation:
    """trained_config: config_digest of the configuration the scored model was trained with."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    return Evaluation(test_digest, trained_config, run_id, now)


def record(ledger: list[dict], evaluation: Evaluation) -> tuple[list[dict], list[dict]]:
    """(the ledger with this evaluation, earlier evaluations of other configurations on the
    same test split). Re-scoring the same run (e.g. a rerun of test-holdout) adds nothing."""
    others = other_configurations(ledger, evaluation)
    if any(
        e["test_digest"] == evaluation.test_digest and e["run_id"] == evaluation.run_id
        for e in ledger
    ):
        return ledger, others
    return [*ledger, asdict(evaluation)], others


def other_configurations(ledger: list[dict], evaluation: Evaluation) -> list[dict]:
    """The ledger's evaluations of evaluation's test split with another configuration."""
    return [
        e
        for e in ledger
        if e["test_digest"] == evaluation.test_digest
        and e["config_digest"] != evaluation.config_digest
    ]


# A shared ledger (the tracking server's): records an evaluation (asdict) and returns the
# evaluations of its test split, the new one included.
SharedLedger = Callable[[dict[str, str]], list[dict[str, str]]]


def record_evaluation(
    path: Path, evaluation: Evaluation, shared: SharedLedger | None = None
) -> tuple[list[dict], list[dict]]:
    """record() on the ledger file at path, under an exclusive lock beside it: parallel
    test-holdout runs (sweeps, several users' jobs) then add their evaluations in turn, and
    none of them is lost. With shared, the evaluation goes there instead (the file is left
    alone): every clone tracking into the same server counts it. Returns what record()
    returns."""
    if shared is not None:
        ledger = shared(asdict(evaluation))
        return ledger, other_configurations(ledger, evaluation)
    lock_path = path.with_name(f".{path.name}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(lock_path, timeout=LOCK_TIMEOUT_S):
            ledger = read_json(path, "test-holdout") if path.exists() else []
            ledger, others = record(ledger, evaluation)
            write_json(path, ledger)
    except Timeout:
        raise StagewiseError(
            f"waited {LOCK_TIMEOUT_S} s for {lock_path}: another process holds the holdout ledger; "
            "find and stop it, then rerun test-holdout"
        ) from None
    return ledger, others


def configurations_evaluated(ledger: list[dict], test_digest: str) -> int:
    return len({e["config_digest"] for e in ledger if e["test_digest"] == test_digest})


def warning(others: list[dict], test_digest: str) -> str:
    runs = ", ".join(sorted({e["run_id"][:8] for e in others}))
    configs = len({e["config_digest"] for e in others})
    return (
        f"THE TEST SET HAS BEEN USED BEFORE: test split {test_digest[:12]} already scored "
        f"{configs} other configuration(s) (MLflow runs {runs}). Each extra look makes the test "
        "score optimistic: choose models on the valid split and score the test set once."
    )
