"""One holdout ledger per team: with a tracking server, test-holdout records each evaluation
in the server (pipeline/tracking/ledger.py), so every clone counts every clone's looks at
the test split; the project's data/holdout_ledger.json is left alone."""

import logging
import multiprocessing
import uuid
from dataclasses import asdict, replace

import pytest

from pipeline.core.config import config_digest
from pipeline.core.errors import StagewiseError
from pipeline.core.io import read_json
from pipeline.core.paths import ModelFiles, Paths
from pipeline.evaluate import holdout
from pipeline.tracking import ledger
from pipeline.tracking.store import reconnect
from tests.conftest import compose_config
from tests.project import TINY, copy_of_template
from tests.server.tracked import admin_client

pytestmark = pytest.mark.e2e

CFG = compose_config()
WARNING = "THE TEST SET HAS BEEN USED BEFORE"


def recorded(server, test_digest: str) -> dict[str, str]:
    """{model run id: configuration digest} of the server's ledger for a test split."""
    store = reconnect(server.uri, None)
    experiment = store.experiment_id(ledger.EXPERIMENT)
    return {
        e["run_id"]: e["config_digest"] for e in ledger.evaluations(store, experiment, test_digest)
    }


def test_two_clones_scoring_one_test_split_are_both_counted_and_warned(
    server, tmp_path_factory, monkeypatch, caplog
):
    """Two copies of the tiny pipeline run; each trains its configuration into the server and
    scores the test split (the stages' run(), as DVC's commands would, in this process)."""
    from stages import test_holdout, train

    first, second = (Paths(copy_of_template(tmp_path_factory, n).root) for n in ("a", "b"))
    configs = compose_config(*TINY), compose_config(*TINY, "train.lr=0.02")  # a teammate's
    for clone in (first, second):  # each clone starts with a test set nobody looked at
        clone.holdout_ledger.unlink()
    admin_client(server, monkeypatch)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.uri)
    test_digest = read_json(first.split_report, "split")["splits"]["test"]["digest"]
    before = set(recorded(server, test_digest).values())  # a server CI shares may hold some

    def score(clone: Paths, cfg) -> tuple[int, list[str]]:
        """test-holdout in clone: (its test_evaluations, its warnings)."""
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="stagewise"):
            test_holdout.run(cfg, clone)
        warned = [r.getMessage() for r in caplog.records if WARNING in r.getMessage()]
        return read_json(clone.test_metrics, "test")["test_evaluations"], warned

    train.run(configs[0], first)
    score(first, configs[0])
    train.run(configs[1], second)
    scored = score(second, configs[1])
    again = score(first, configs[0])

    runs = [read_json(ModelFiles(c.model_dir).run, "train")["run_id"] for c in (first, second)]
    configurations = recorded(server, test_digest)
    assert configurations[runs[0]] != configurations[runs[1]]
    expected = len(before | {configurations[runs[0]], configurations[runs[1]]})
    for (evaluations, warned), other in ((scored, runs[0]), (again, runs[1])):
        assert evaluations == expected  # 2 on a server of its own
        assert len(warned) == 1 and other[:8] in warned[0], warned  # each warned of the other
    # the server is the ledger: the clones write no file of their own
    assert not [c for c in (first, second) if c.holdout_ledger.exists()]


def record_after_barrier(uri: str, evaluations: list, unused, barrier) -> None:
    shared = ledger.server_ledger(reconnect(uri, None))
    barrier.wait()  # every process starts recording at the same moment
    for evaluation in evaluations:
        holdout.record_evaluation(unused, evaluation, shared)


def test_processes_recording_at_once_lose_no_evaluation(server, monkeypatch, tmp_path):
    # 4 processes x 2 evaluations (each its own configuration) of a test split of their own,
    # released together
    admin_client(server, monkeypatch)
    test_digest, processes, per_process = uuid.uuid4().hex, 4, 2
    evaluations = [
        [
            holdout.new_evaluation(
                test_digest,
                config_digest(replace(CFG, seed=100 * p + i)),
                f"run-{uuid.uuid4().hex}",
            )
            for i in range(per_process)
        ]
        for p in range(processes)
    ]
    context = multiprocessing.get_context("fork")  # children only run the ledger code
    barrier = context.Barrier(processes)
    unused = tmp_path / "holdout_ledger.json"
    jobs = [
        context.Process(target=record_after_barrier, args=(server.uri, e, unused, barrier))
        for e in evaluations
    ]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(timeout=60)
    assert [job.exitcode for job in jobs] == [0] * processes
    configurations = recorded(server, test_digest)
    assert sorted(configurations) == sorted(e.run_id for job in evaluations for e in job)
    assert len(set(configurations.values())) == processes * per_process
    assert not unused.exists()


def test_a_teammate_who_may_not_write_the_ledger_gets_one_line(server, monkeypatch):
    from mlflow.server import get_app_client

    admin_client(server, monkeypatch)
    store = reconnect(server.uri, None)
    evaluation = holdout.new_evaluation(uuid.uuid4().hex, config_digest(CFG), "run-of-the-admin")
    ledger.record(store, asdict(evaluation))  # the ledger's experiment exists
    name = f"reader-{uuid.uuid4().hex[:8]}"
    get_app_client("basic-auth", tracking_uri=server.uri).create_user(name, "reader-pass-1234")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", name)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "reader-pass-1234")
    theirs = replace(evaluation, run_id="run-of-the-reader")
    with pytest.raises(StagewiseError) as refused:
        ledger.record(store, asdict(theirs))
    assert f"{name} needs EDIT permission" in str(refused.value)
    assert ledger.EXPERIMENT in str(refused.value)
