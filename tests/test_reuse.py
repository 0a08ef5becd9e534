"""The job key a sweep job is matched by, and the lookup of a finished run with that key, on
real data and a real MLflow store (whole sweeps that reuse runs: tests/e2e/test_sweeps.py,
tests/e2e/test_tune.py)."""

import logging
import shutil
import socket

import pytest
import yaml

from pipeline.core.io import read_json
from pipeline.core.paths import PROJECT_ROOT, ModelFiles, Paths
from pipeline.tracking.reuse import (
    JOB_KEY_TAG,
    PRUNED_TAG,
    REUSED_FROM_TAG,
    finished_run,
    job_key,
)
from pipeline.tracking.runs import training_run
from stages import train
from tests.conftest import compose_config

CONFIG = {"tracking": {"experiment": "unit", "system_metrics": False}}


@pytest.fixture(scope="module")
def cfg():
    return compose_config()


def copy_data(source: Paths, root) -> Paths:
    """The data training reads, copied: a test may change it."""
    shutil.copytree(source.root / "data", root / "data")
    return Paths(root)


def copy_code(root) -> None:
    """dvc.yaml and the train stage's code deps, copied: a test may change them."""
    stage = yaml.safe_load((PROJECT_ROOT / "dvc.yaml").read_text())["stages"]["train"]
    for name in ["dvc.yaml", *(d for d in stage["deps"] if d.endswith(".py"))]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(PROJECT_ROOT / name, root / name)


def test_the_key_changes_with_the_training_config_data_and_code_only(cfg, digits_paths, tmp_path):
    key = job_key(cfg, digits_paths)
    assert len(key) == 32 and job_key(compose_config(), digits_paths) == key
    assert job_key(compose_config("train.lr=0.004"), digits_paths) != key
    assert job_key(compose_config("eval.threshold=0.4"), digits_paths) != key  # a train param
    # Not the train stage's params: how a sweep runs, ranks or reuses.
    other = ("sweep.reuse=false", "tune.trials=3", "compare.metric=valid_loss", "eval.tta=2")
    assert job_key(compose_config(*other), digits_paths) == key

    data = copy_data(digits_paths, tmp_path / "data-copy")
    assert job_key(cfg, data) == key
    data.normalize.write_text(data.normalize.read_text().replace("0.", "0.0", 1))
    changed = job_key(cfg, data)
    assert changed != key
    data.split.unlink()
    assert job_key(cfg, data) not in (key, changed)  # a missing file counts as absent

    code = tmp_path / "code"
    copy_code(code)
    assert job_key(cfg, digits_paths, code) == key
    with (code / "stages/train.py").open("a") as f:
        f.write("# changed\n")
    assert job_key(cfg, digits_paths, code) != key


def test_the_lookup_finds_the_newest_finished_training_with_the_key(tmp_path):
    paths = Paths(tmp_path)

    def run(tags: dict[str, str], error: bool = False) -> str:
        with training_run(paths, CONFIG, tags) as run:
            run.log_metrics({"valid_error_rate": 0.25})
            if error:
                raise RuntimeError("failed")
        return run.id

    run({JOB_KEY_TAG: "k"})
    newest = run({JOB_KEY_TAG: "k"})
    run({JOB_KEY_TAG: "k", REUSED_FROM_TAG: newest})  # a reuse of it, not a training
    run({JOB_KEY_TAG: "k", PRUNED_TAG: "true"})  # stopped early by the tuner
    with pytest.raises(RuntimeError):
        run({JOB_KEY_TAG: "k"}, error=True)  # FAILED
    run({JOB_KEY_TAG: "other"})

    found = finished_run(paths, "unit", "k")
    assert found.id == newest and found.metrics == {"valid_error_rate": 0.25}
    assert finished_run(paths, "unit", "none") is None
    assert finished_run(paths, "no-such-experiment", "k") is None


def test_a_store_that_cannot_be_searched_means_no_reuse_said_in_one_line(
    tmp_path, caplog, monkeypatch
):
    with socket.socket() as closed:  # a port nobody listens on: a tracking server that is down
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    with caplog.at_level(logging.WARNING, "stagewise"):
        assert finished_run(Paths(tmp_path), "unit", "k") is None
    (line,) = [r.getMessage() for r in caplog.records if r.name == "stagewise"]
    assert line.startswith("cannot look for a finished run to reuse (") and "\n" not in line


def test_a_sweep_job_reuses_unless_told_not_to_and_a_plain_training_never_does(
    digits_paths, tmp_path, caplog
):
    paths = copy_data(digits_paths, tmp_path / "project")
    tiny = ("train.epochs=1", "model.widths=[8,16]")

    def job(name: str | None, *overrides: str) -> dict:
        """Train as a sweep's job (or, name None, as a plain run): its models/run.json."""
        out = Paths(tmp_path / f"job{len(list(tmp_path.glob('job*')))}")
        train.run(compose_config(*tiny, *overrides), paths, out, job=name)
        return read_json(ModelFiles(out.model_dir).run, "train")

    first = job("job a")
    assert REUSED_FROM_TAG not in first  # nothing to reuse yet: trained
    with caplog.at_level(logging.INFO, "stagewise"):
        reused = job("job a")
    assert reused[REUSED_FROM_TAG] == first["run_id"] != reused["run_id"]
    assert f"job a: reusing finished run {first['run_id']} (same config, data and code); " in (
        caplog.text
    )
    assert REUSED_FROM_TAG not in job("job a", "sweep.reuse=false")
    assert REUSED_FROM_TAG not in job(None)  # dvc repro / a single run: DVC's to skip, not ours
