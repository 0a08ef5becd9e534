"""The holdout ledger: the test split's evaluations are recorded, and repeats flagged."""

import json
import multiprocessing
from dataclasses import replace

import pytest
from filelock import FileLock

from pipeline.core.config import config_digest
from pipeline.core.errors import StagewiseError
from pipeline.evaluate import holdout
from tests.conftest import compose_config

CFG = compose_config()
DIGEST = config_digest(CFG)


def test_a_second_configuration_on_the_same_test_split_is_recorded_and_flagged():
    first = holdout.new_evaluation("digest-a", DIGEST, "run1")
    ledger, others = holdout.record([], first)
    assert others == [] and holdout.configurations_evaluated(ledger, "digest-a") == 1
    other_cfg = replace(CFG, train=replace(CFG.train, lr=0.123))
    ledger, others = holdout.record(
        ledger, holdout.new_evaluation("digest-a", config_digest(other_cfg), "run2")
    )
    assert [e["run_id"] for e in others] == ["run1"]
    assert holdout.configurations_evaluated(ledger, "digest-a") == 2
    assert "THE TEST SET HAS BEEN USED BEFORE" in holdout.warning(others, "digest-a")


def test_rescoring_the_same_run_or_another_test_split_is_not_a_repeat():
    ledger, _ = holdout.record([], holdout.new_evaluation("digest-a", DIGEST, "run1"))
    again, others = holdout.record(ledger, holdout.new_evaluation("digest-a", DIGEST, "run1"))
    assert again == ledger and others == []
    other_split, others = holdout.record(ledger, holdout.new_evaluation("digest-b", DIGEST, "run3"))
    assert others == [] and len(other_split) == 2


def test_evaluation_settings_do_not_change_the_configuration_digest():
    bigger_batches = replace(CFG, eval=replace(CFG.eval, batch_size=7))
    assert config_digest(bigger_batches) == config_digest(CFG)
    elsewhere = replace(
        CFG,
        predict=replace(CFG.predict, output="x.csv"),
        tracking=replace(CFG.tracking, experiment="x"),
    )
    assert config_digest(elsewhere) == config_digest(CFG)
    assert config_digest(replace(CFG, seed=CFG.seed + 1)) != config_digest(CFG)


def record_after_barrier(ledger_path, evaluations, barrier) -> None:
    barrier.wait()  # every process starts recording at the same moment
    for evaluation in evaluations:
        holdout.record_evaluation(ledger_path, evaluation)


def test_parallel_test_holdout_runs_lose_no_evaluation(tmp_path):
    # 6 processes x 5 evaluations each, released together: without the ledger's lock,
    # overlapping read-modify-writes overwrite each other's entries.
    ledger_path = tmp_path / "data/holdout_ledger.json"
    processes, per_process = 6, 5
    context = multiprocessing.get_context("fork")  # children only run the ledger code
    barrier = context.Barrier(processes)
    jobs = [
        context.Process(
            target=record_after_barrier,
            args=(
                ledger_path,
                [
                    holdout.new_evaluation("digest-a", DIGEST, f"run{p}-{i}")
                    for i in range(per_process)
                ],
                barrier,
            ),
        )
        for p in range(processes)
    ]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=60)
    assert [job.exitcode for job in jobs] == [0] * processes
    ledger = json.loads(ledger_path.read_text())
    expected = {f"run{p}-{i}" for p in range(processes) for i in range(per_process)}
    assert sorted(e["run_id"] for e in ledger) == sorted(expected)


def test_a_ledger_locked_too_long_is_a_clear_error(tmp_path, monkeypatch):
    ledger_path = tmp_path / "holdout_ledger.json"
    monkeypatch.setattr(holdout, "LOCK_TIMEOUT_S", 0.2)
    with FileLock(tmp_path / ".holdout_ledger.json.lock"), pytest.raises(StagewiseError) as e:
        holdout.record_evaluation(ledger_path, holdout.new_evaluation("digest-a", DIGEST, "run1"))
    assert ".holdout_ledger.json.lock" in str(e.value) and not ledger_path.exists()
