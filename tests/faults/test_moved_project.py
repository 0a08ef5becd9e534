"""A project moved with `mv` keeps its runs: MLflow stores absolute artifact locations, which
the store rewrites to follow the project."""

import subprocess

import mlflow
from mlflow.tracking import MlflowClient

from pipeline.core.io import read_json
from pipeline.core.paths import ModelFiles, Paths
from pipeline.tracking.models import run_model_files
from pipeline.tracking.runs import training_run
from pipeline.tracking.store import local_store_uri
from stages import ingest, normalize_stats, split, train
from tests.conftest import compose_config


def test_after_mv_new_runs_write_under_the_new_path_and_old_models_load(tmp_path):
    before, after = Paths(tmp_path / "before"), Paths(tmp_path / "after")
    cfg = compose_config("train.epochs=1", "model.widths=[8,16]")
    for stage in (ingest, split, normalize_stats, train):
        stage.run(cfg, before)
    trained = read_json(ModelFiles(before.model_dir).run, "train")

    subprocess.run(["mv", str(before.root), str(after.root)], check=True)

    with training_run(after, {"tracking": {"experiment": cfg.tracking.experiment}}, {}) as run:
        run.log_artifact(after.normalize)
    client = MlflowClient(local_store_uri(after))
    assert client.get_run(run.id).info.artifact_uri.startswith(
        (after.mlruns / "artifacts").as_uri()
    )
    assert list((after.mlruns / "artifacts").glob(f"{run.id}/**/normalize.json"))
    old = client.get_run(trained["run_id"])
    assert old.info.artifact_uri.startswith((after.mlruns / "artifacts").as_uri())
    files = run_model_files(after, trained["run_id"], tmp_path / "fetched")
    assert files.weights.is_file()
    model = mlflow.pyfunc.load_model(trained["model_uri"])
    assert model.metadata.run_id == trained["run_id"]
    assert not before.root.exists()  # nothing recreated the old folder
