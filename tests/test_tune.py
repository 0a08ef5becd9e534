"""stages.tune's search space (config keys nested or dotted, checked before any trial), its
study name and storage URL, and how its trial loop meets failed and interrupted trials, on a
real Optuna study in sqlite and a real MLflow store."""

import logging
import math
import socket
from dataclasses import replace

import pytest
from mlflow.tracking import MlflowClient
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from pipeline.core.errors import StagewiseError
from pipeline.core.paths import Paths
from pipeline.tracking.runs import training_run
from pipeline.tracking.store import local_store_uri
from pipeline.train.tune import (
    open_storage,
    open_study,
    run_trials,
    search_space,
    storage_url,
    study_lock,
)
from stages.tune import check, finite, with_params
from tests.conftest import compose_config


def test_the_space_flattens_nested_and_dotted_keys():
    space = search_space(
        {
            "train": {"lr": {"low": 1e-3, "high": 1e-1, "log": True}},
            "train.epochs": {"low": 2, "high": 4},
            "model": {"dropout": {"choices": [0.0, 0.25]}},
        }
    )
    assert space == {
        "train.lr": {"low": 1e-3, "high": 1e-1, "log": True},
        "train.epochs": {"low": 2, "high": 4},
        "model.dropout": {"choices": [0.0, 0.25]},
    }
    cfg = with_params(compose_config(), {"train.epochs": 3, "model.dropout": 0.25})
    assert (cfg.train.epochs, cfg.model.dropout) == (3, 0.25)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "+tune.space.train.lrr={low:0.001,high:0.01}",
            "tune.space.train.lrr: train.lrr is not a config key; did you mean train.lr?",
        ),
        (
            "+tune.space.train.lr.hihg=0.1",
            "tune.space.train.lr: unknown hihg; use low, high, log, step or choices",
        ),
        (
            "tune.space.train.lr.low=0.5",
            "tune.space.train.lr: need low < high (and low > 0 with log)",
        ),
        (
            "+tune.space.split.seed={choices:[1,2]}",
            "tune.space.split.seed: a tune reuses the ingested data and split",
        ),
        ("+tune.space.train.epochs={low:1.5,high:3}", "config: train.epochs: "),
        (
            "+tune.space.model.dropout={low:1.5,high:2.0}",
            "tune.space.model.dropout: low 1.5 is refused: model.dropout=1.5: must be in [0, 1)",
        ),
        (
            "+tune.space.model.dropout={low:0.0,high:1.0}",
            "tune.space.model.dropout: high 1.0 is refused: model.dropout=1.0: must be in [0, 1)",
        ),
        (
            "+tune.space.model.dropout={choices:[0.25,-0.5]}",
            "tune.space.model.dropout: choice -0.5 is refused: model.dropout=-0.5: must be in",
        ),
        ("tune.study=../../x", "tune.study=../../x: name a study with letters, digits"),
        ("tune.max_failed_trials=0", "tune.max_failed_trials=0: must be at least 1"),
    ],
)
def test_a_bad_space_is_one_line_naming_the_key(override, message):
    cfg = compose_config(override)
    with pytest.raises(StagewiseError) as error:
        check(cfg, search_space(cfg.tune.space))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_tune_refuses_what_would_fail_every_trial():
    with pytest.raises(StagewiseError, match=r"compare\.metric=.valid_f1."):
        check(compose_config("compare.metric=valid_f1"), {})
    with pytest.raises(StagewiseError, match=r"train\.devices=1"):
        check(compose_config("train.devices=2"), {})


def test_a_storage_url_with_a_password_is_refused(tmp_path):
    tune = replace(compose_config().tune, storage="postgresql://me:secret@db/optuna")
    with pytest.raises(StagewiseError, match="PGPASSWORD") as error:
        storage_url(tune, Paths(tmp_path))
    assert "secret" not in str(error.value)
    assert storage_url(replace(tune, storage=None), Paths(tmp_path)).endswith("mlruns/optuna.db")


@pytest.mark.parametrize("name", ["../../x", "a/b", "..", ".hidden", "/tmp/x", "a b", ""])
def test_a_study_name_that_would_leave_multirun_tune_is_refused(name):
    cfg = compose_config()
    cfg = replace(cfg, tune=replace(cfg.tune, study=name))
    with pytest.raises(StagewiseError, match=r"^tune\.study=.*: name a study with letters"):
        check(cfg, {})


def test_a_plain_study_name_and_an_in_range_space_pass():
    cfg = compose_config("tune.study=wide-lr_2.0", "+tune.space.model.dropout={low:0.0,high:0.5}")
    check(cfg, search_space(cfg.tune.space))


def test_a_dropout_outside_its_range_is_one_line_for_every_stage():
    with pytest.raises(StagewiseError, match=r"^model\.dropout=1\.5: must be in \[0, 1\)"):
        compose_config("model.dropout=1.5")


def test_a_bare_postgresql_url_is_read_with_the_installed_psycopg2(tmp_path):
    """SQLAlchemy 2.1 maps postgresql:// to psycopg 3, which the project does not install."""
    tune = replace(compose_config().tune, storage="postgresql://me@db.example:5433/optuna")
    url = storage_url(tune, Paths(tmp_path))
    assert url == "postgresql+psycopg2://me@db.example:5433/optuna"
    assert make_url(url).get_dialect().driver == "psycopg2"
    assert create_engine(url).dialect.driver == "psycopg2"  # connects to nothing yet
    explicit = replace(tune, storage="postgresql+psycopg2://me@db/optuna?sslmode=require")
    assert storage_url(explicit, Paths(tmp_path)) == explicit.storage


def test_a_storage_that_cannot_be_reached_is_one_line_naming_it(tmp_path):
    closed = socket.socket()  # bound, never listening: connections to it are refused
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    tune = replace(compose_config().tune, storage=f"postgresql://me@127.0.0.1:{port}/optuna")
    try:
        with pytest.raises(StagewiseError) as error:
            open_storage(storage_url(tune, Paths(tmp_path)), tune)
    finally:
        closed.close()
    message = str(error.value)
    assert message.startswith(
        f"tune.storage: cannot open postgresql+psycopg2://me@127.0.0.1:{port}/optuna"
    )
    assert "Connection refused" in message and "\n" not in message


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def optuna_log():
    """What Optuna's loggers pass to their handlers (its own handler prints them)."""
    handler = Records()
    logging.getLogger("optuna").addHandler(handler)
    yield handler.records
    logging.getLogger("optuna").removeHandler(handler)


def study_in(tmp_path, name: str):
    cfg = compose_config(f"tune.study={name}", "tune.heartbeat_s=1")
    paths = Paths(tmp_path)
    return open_study(cfg.tune, paths, cfg.compare.metric), study_lock(paths, name)


@pytest.mark.parametrize(
    ("objective", "reason"),
    [
        (lambda trial: 1 / 0, "division by zero"),
        (lambda trial: math.nan, "its value is nan"),
        (lambda trial: math.inf, "its value is inf"),
    ],
    ids=["raises", "nan", "inf"],
)
def test_failing_trials_stop_the_search_at_max_failed_in_one_line_each(
    tmp_path, caplog, optuna_log, objective, reason
):
    """Every trial failing used to run forever: Optuna counts no failed trial toward
    tune.trials, and the loop replaced each one (227 trials in 100 s, each with a traceback)."""
    study, lock = study_in(tmp_path, "failing")
    with pytest.raises(StagewiseError) as error, caplog.at_level(logging.WARNING, "stagewise"):
        run_trials(study, budget=4, objective=objective, lock=lock, poll_s=0.1, max_failed=3)
    assert str(error.value) == (
        "stopped study failing: 3 of this run's trials failed (tune.max_failed_trials=3), the "
        f"last, trial 2: {reason}; fix that, or narrow tune.space to values that train"
    )
    assert [t.state.name for t in study.get_trials()] == ["FAIL"] * 3
    warned = [r.getMessage() for r in caplog.records if r.name == "stagewise"]
    assert warned == [f"trial {n} failed: {reason}" for n in range(3)]
    assert not [r for r in optuna_log if r.levelno >= logging.WARNING]  # no traceback
    assert not lock.is_locked


def test_a_few_failed_trials_do_not_stop_a_search(tmp_path):
    study, lock = study_in(tmp_path, "some-fail")
    run_trials(study, 3, lambda t: 1 / (t.number not in (0, 2)), lock, poll_s=0.1, max_failed=3)
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "COMPLETE"] * 2 + ["COMPLETE"]


def test_ctrl_c_in_a_trial_reaches_the_stage_without_optunas_traceback(tmp_path, optuna_log):
    def interrupted(trial):
        raise KeyboardInterrupt

    study, lock = study_in(tmp_path, "interrupted")
    with pytest.raises(KeyboardInterrupt):
        run_trials(study, 2, interrupted, lock, poll_s=0.1, max_failed=3)
    assert not [r for r in optuna_log if r.levelno >= logging.WARNING]
    assert not lock.is_locked


def test_a_trial_scoring_nan_or_inf_fails_its_training_run_too(tmp_path):
    """Else the run stays FINISHED, and sweep.reuse hands its NaN to the next trial with the
    same values."""
    paths = Paths(tmp_path)
    client = MlflowClient(local_store_uri(paths))
    for value in (math.nan, math.inf, None):
        with training_run(paths, {"tracking": {"experiment": "unit"}}, {}) as run:
            pass
        with pytest.raises(StagewiseError, match=rf"^valid_loss is {value}, which no search"):
            finite(value, "valid_loss", run)
        failed = client.get_run(run.id)
        assert failed.info.status == "FAILED"
        assert failed.data.tags["error"].startswith(f"valid_loss is {value}")
    with training_run(paths, {"tracking": {"experiment": "unit"}}, {}) as run:
        pass
    assert finite(0.0, "valid_error_rate", run) == 0.0  # a perfect error rate is a result
    assert client.get_run(run.id).info.status == "FINISHED"
