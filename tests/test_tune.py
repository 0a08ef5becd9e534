"""stages.tune's search space: config keys nested or dotted, checked before any trial."""

from dataclasses import replace

import pytest

from pipeline.core.errors import StagewiseError
from pipeline.core.paths import Paths
from pipeline.train.tune import search_space, storage_url
from stages.tune import check, with_params
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
