"""MLflow bookkeeping against a real local store: runs never stay RUNNING."""

import pytest
from mlflow.tracking import MlflowClient

from pipeline.core.errors import StagewiseError
from pipeline.core.io import file_md5
from pipeline.core.paths import Paths
from pipeline.tracking import store as tracking_store
from pipeline.tracking.runs import flatten, training_run
from pipeline.tracking.store import local_store_uri
from pipeline.tracking.sweeps import runs_of
from tests.conftest import compose_config

CONFIG = {"tracking": {"experiment": "unit"}, "train": {"lr": 0.1, "augment": {"flip": False}}}


@pytest.fixture
def paths(tmp_path) -> Paths:
    return Paths(tmp_path)


def only_run(paths: Paths):
    client = MlflowClient(local_store_uri(paths))
    experiment = client.get_experiment_by_name("unit")
    (run,) = client.search_runs([experiment.experiment_id])
    return run, experiment


def test_finished_run_holds_flat_params_and_lives_under_mlruns(paths):
    with training_run(paths, CONFIG, {"stage": "train"}, "name") as run:
        run.log_metrics({"train_loss": 0.5}, step=1)
    run, experiment = only_run(paths)
    assert run.info.status == "FINISHED" and run.info.run_name == "name"
    assert run.data.params == {
        "tracking.experiment": "unit",
        "train.lr": "0.1",
        "train.augment.flip": "False",
    }
    assert run.data.metrics == {"train_loss": 0.5}
    assert (
        run.data.tags["stage"] == "train" and run.data.tags["mlflow.source.name"] == "stages.train"
    )
    assert experiment.artifact_location == (paths.mlruns / "artifacts").as_uri()
    assert (paths.mlruns / "mlflow.db").exists()
    client = MlflowClient(local_store_uri(paths))
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["config.yaml"]


@pytest.mark.parametrize(
    ("error", "status"), [(RuntimeError, "FAILED"), (KeyboardInterrupt, "KILLED")]
)
def test_a_run_that_dies_is_marked_failed_or_killed(paths, error, status):
    with pytest.raises(error), training_run(paths, CONFIG, {}):
        raise error()
    assert only_run(paths)[0].info.status == status


def test_compare_refuses_a_metric_no_run_logged_naming_those_they_did(paths):
    """A metric of another task (or a typo) gave a table with an empty column, exit 0."""
    from stages import compare

    with training_run(paths, CONFIG, {"stage": "train"}) as run:
        run.log_metrics({"valid_rmse": 1.5, "valid_r2": 0.9, "train_loss": 0.2})
    with training_run(paths, CONFIG, {"stage": "lr_find"}) as lr_find:
        lr_find.log_metrics({"valid_f1_samples": 0.5})  # not a model: compare leaves it out
    assert [r["run_id"] for r in runs_of(paths, "unit", None)] == [run.id]
    cfg = compose_config("tracking.experiment=unit", "compare.metric=valid_f1_samples")
    with pytest.raises(
        StagewiseError,
        match=r"^compare.metric=valid_f1_samples: none of the 1 run\(s\) logged it; they "
        r"logged valid_r2, valid_rmse$",
    ):
        compare.run(cfg, paths)


def test_compare_tells_apart_runs_on_two_versions_of_the_same_dataset(paths):
    from pipeline.evaluate.compare import runs_table

    for version, error_rate in [("v1.dir", 0.2), ("v2.dir", 0.1), ("v2.dir", 0.3)]:
        with training_run(paths, CONFIG, {"stage": "train", "dataset.md5": version}) as run:
            run.log_metrics({"valid_error_rate": error_rate})
    table = runs_table(runs_of(paths, "unit", None), "valid_error_rate")
    assert list(table["dataset.md5"]) == ["v2.dir", "v1.dir", "v2.dir"]
    assert list(table["valid_error_rate"]) == [0.1, 0.2, 0.3]


def test_flatten_nests_with_dots_and_stringifies():
    assert flatten({"a": {"b": [1, 2], "c": {"d": None}}}) == {
        "a.b": "[1, 2]",
        "a.c.d": "None",
    }


def test_md5_matches_what_dvc_records(tmp_path):
    import hashlib

    file = tmp_path / "x.bin"
    file.write_bytes(b"abc" * 1000)
    assert file_md5(file) == hashlib.md5(b"abc" * 1000).hexdigest()


def test_calls_are_retried_while_the_sqlite_store_is_locked(monkeypatch):
    monkeypatch.setattr(tracking_store, "LOCK_RETRY_SECONDS", (0.0, 0.0, 0.0))
    calls = []

    class Store:
        def log_batch(self, run_id):
            calls.append(run_id)
            if len(calls) < 3:
                raise RuntimeError("(sqlite3.OperationalError) database is locked")
            return "logged"

        def broken(self):
            raise ValueError("something else")

    client = tracking_store.RetryLocked(Store())
    assert client.log_batch("run") == "logged" and len(calls) == 3
    with pytest.raises(ValueError, match="something else"):
        client.broken()


def test_a_run_handle_pickles_as_its_store_uri_and_id(paths):
    """Hydra's parallel launcher pickles the sweep callback, which holds the parent run."""
    import pickle

    with training_run(paths, CONFIG, {}) as run:
        copy = pickle.loads(pickle.dumps(run))
        assert (copy.id, copy.store.uri) == (run.id, run.store.uri)
        copy.log_metrics({"x": 1.0})
    assert only_run(paths)[0].data.metrics == {"x": 1.0}
