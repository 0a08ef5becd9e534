"""The holdout ledger: the test split's evaluations are recorded, and repeats flagged."""

from dataclasses import replace

from pipeline import holdout
from tests.conftest import compose_config

CFG = compose_config()


def test_a_second_configuration_on_the_same_test_split_is_recorded_and_flagged():
    first = holdout.new_evaluation("digest-a", CFG, "run1")
    ledger, others = holdout.record([], first)
    assert others == [] and holdout.configurations_evaluated(ledger, "digest-a") == 1
    other_cfg = replace(CFG, train=replace(CFG.train, lr=0.123))
    ledger, others = holdout.record(ledger, holdout.new_evaluation("digest-a", other_cfg, "run2"))
    assert [e["run_id"] for e in others] == ["run1"]
    assert holdout.configurations_evaluated(ledger, "digest-a") == 2
    assert "THE TEST SET HAS BEEN USED BEFORE" in holdout.warning(others, "digest-a")


def test_rescoring_the_same_run_or_another_test_split_is_not_a_repeat():
    ledger, _ = holdout.record([], holdout.new_evaluation("digest-a", CFG, "run1"))
    again, others = holdout.record(ledger, holdout.new_evaluation("digest-a", CFG, "run1"))
    assert again == ledger and others == []
    other_split, others = holdout.record(ledger, holdout.new_evaluation("digest-b", CFG, "run3"))
    assert others == [] and len(other_split) == 2


def test_evaluation_settings_do_not_change_the_configuration_digest():
    bigger_batches = replace(CFG, eval=replace(CFG.eval, batch_size=7))
    assert holdout.config_digest(bigger_batches) == holdout.config_digest(CFG)
    elsewhere = replace(
        CFG,
        predict=replace(CFG.predict, output="x.csv"),
        tracking=replace(CFG.tracking, experiment="x"),
    )
    assert holdout.config_digest(elsewhere) == holdout.config_digest(CFG)
    assert holdout.config_digest(replace(CFG, seed=CFG.seed + 1)) != holdout.config_digest(CFG)
