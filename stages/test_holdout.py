"""test-holdout: the only code that reads the test split; scores the final model once.

Every evaluation is recorded in the holdout ledger (the tracking server's when there is
one, else the project's data/holdout_ledger.json); scoring another configuration on the
same test split is allowed but warned about loudly, and counted on the MLflow run. Sweeps do
not score it at all unless eval.allow_test_sweep=true: Hydra multirun is refused, and queued
DVC experiments write a sealed metrics/test.json.
"""

import logging

from pipeline.core.config import Config, config_digest
from pipeline.core.errors import StagewiseError
from pipeline.core.io import read_json, write_json
from pipeline.core.paths import Paths
from pipeline.evaluate import holdout
from pipeline.evaluate.scoring import headline, score_split
from pipeline.tasks.kinds import task_kind
from pipeline.tracking.ledger import server_ledger
from pipeline.tracking.models import register_candidate
from pipeline.tracking.runs import CONFIG_DIGEST_TAG, Run, trained_run
from stages.common import entrypoint, is_multirun

log = logging.getLogger("stagewise")


def run(cfg: Config, paths: Paths = Paths()) -> dict:
    run, run_info = trained_run(paths)
    if paths.home != paths.root and not cfg.eval.allow_test_sweep:
        return seal(paths, run)
    scored = score_split(paths, "test", cfg.eval, cfg.train.augment)
    test_digest = read_json(paths.split_report, "split")["splits"]["test"]["digest"]
    # The model's own configuration: `python -m stages.train train.lr=...` trains another
    # model under the same params.yaml. A run from before the tag falls back to this stage's.
    trained_config = run.tags().get(CONFIG_DIGEST_TAG) or config_digest(cfg)
    evaluation = holdout.new_evaluation(test_digest, trained_config, run.id)
    shared = server_ledger(run.store)  # a tracking server's; None: data/holdout_ledger.json
    ledger, others = holdout.record_evaluation(paths.holdout_ledger, evaluation, shared)
    if others:
        log.warning("WARNING: %s", holdout.warning(others, test_digest))
    evaluations = holdout.configurations_evaluated(ledger, test_digest)
    write_json(paths.test_metrics, {**headline(scored.metrics), "test_evaluations": evaluations})
    metrics = {**scored.report.mlflow_metrics(scored), "test_evaluations": evaluations}
    run.log_metrics(metrics, run_info["epochs"])
    tags = {"test_holdout.used": "true", "test_holdout.split_digest": test_digest}
    run.set_tags({**tags, "test_holdout.evaluations": evaluations})
    run.log_split_inputs(paths, {"test": "testing"})
    for line in scored.report.describe(scored):
        log.info(line)
    gate = task_kind(scored.spec.task).gate_metric  # accuracy for one class per image
    if cfg.eval.register_as and scored.metrics[gate] >= cfg.eval.register_min_accuracy:
        version = register_candidate(run, run_info["model_uri"], cfg.eval.register_as, metrics)
        log.info("registered as %s version %s, alias candidate", cfg.eval.register_as, version)
    elif cfg.eval.register_as:  # said, since R² is below the default 0.0 for a poor model
        log.warning(
            "not registered as %s: test %s %.4g is under eval.register_min_accuracy=%g",
            cfg.eval.register_as, gate, scored.metrics[gate], cfg.eval.register_min_accuracy,
        )  # fmt: skip
    return scored.metrics


def seal(paths: Paths, run: Run) -> dict:
    """A queued DVC experiment (run in a copy of the project) leaves the test split unread:
    a queue is a sweep, and the test set is for the one model chosen from it."""
    sealed = {"sealed": 1}  # a number: `dvc exp show` lists numeric metrics
    write_json(paths.test_metrics, sealed)
    run.set_tags({"test_holdout.used": "false", "test_holdout.sealed": "true"})
    log.info(
        "test split sealed: queued experiments do not score the test set. Compare them on "
        "their valid metrics (dvc exp show), `dvc exp apply` the winner, then score it once "
        "with `dvc repro --force test-holdout` (or queue with -S eval.allow_test_sweep=true)"
    )
    return sealed


def main_run(cfg: Config) -> dict:
    if is_multirun() and not cfg.eval.allow_test_sweep:
        raise StagewiseError(
            "test-holdout refuses to run in a sweep: that scores the test set once per job. Compare "
            "jobs on their valid metrics, then score the winner once (or set eval.allow_test_sweep=true)"
        )
    return run(cfg)


main = entrypoint(main_run)

if __name__ == "__main__":
    main()
