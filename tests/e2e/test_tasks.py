"""Multi-label and regression end to end: `dvc repro` on generated example data
(pipeline/data/examples.py), the MLflow run, the packaged model and the served one."""

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from pipeline.core.paths import Paths
from pipeline.data.examples import write_examples
from pipeline.data.split import load_split_images
from pipeline.tasks.kinds import task_kind
from tests.project import TINY, ProjectCopy, mlflow_client
from tests.serving import images_request, post, served

pytestmark = pytest.mark.e2e

TASKS = {
    # images share source digits within a group: split=group keeps groups whole
    "multilabel": ("data.image_size=16", "split=group"),
    "regression": ("data.image_size=32", "data.targets=[x,y]", "model.y_range=[0,32]"),
}
FILES = {
    "multilabel": {"per_class.csv", "top_losses.csv", "threshold.csv"},
    "regression": {"per_class.csv", "top_losses.csv", "predictions.csv"},
}


@pytest.fixture(scope="module", params=list(TASKS))
def project(request, tmp_path_factory) -> ProjectCopy:
    task = request.param
    root = tmp_path_factory.mktemp(task)
    table = write_examples(task, root / "examples", images=160)
    copy = ProjectCopy.create(root / "project")
    copy.compose(*TINY, f"task={task}", "data=table", f"data.root={table.parent}",
                 "data.channels=1", *TASKS[task])  # fmt: skip
    # lr-find (a stage of its own, beside train) is left out: tests/test_tasks.py runs it
    result = copy.run("dvc", "repro", "evaluate", "test-holdout", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    copy.task = task
    return copy


def test_repro_writes_the_tasks_metrics_tables_and_mlflow_run(project):
    kind = task_kind(project.task)
    valid, test = project.json("metrics/valid.json"), project.json("metrics/test.json")
    assert valid["images"] + test["images"] < 160 and test["test_evaluations"] == 1
    main = kind.main_metric.removeprefix("valid_")  # f1_samples / rmse
    assert np.isfinite(valid[main]) and np.isfinite(test[main])
    assert {p.name for p in (project.root / "plots/valid").iterdir()} == FILES[project.task]
    history = pd.read_csv(project.root / "plots/train/history.csv")
    assert list(history.columns) == ["epoch", *kind.monitors, "lr"] and len(history) == 2
    run_id = project.json("models/run.json")["run_id"]
    run = mlflow_client(project).get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.params["task"] == project.task
    assert run.data.metrics[kind.main_metric] == pytest.approx(history[kind.main_metric].iloc[-1])
    assert run.data.metrics[f"test_{main}"] == pytest.approx(test[main])
    spec = project.json("models/model.json")
    assert spec["task"] == project.task


def answers_for(project, images: np.ndarray) -> pd.DataFrame:
    mlflow.set_tracking_uri(f"sqlite:///{project.root / 'mlruns' / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(project.json("models/run.json")["model_uri"])
    return model.predict(pd.DataFrame({"pixels": list(images)}))


def test_the_packaged_model_answers_in_the_tasks_terms(project):
    test = load_split_images(Paths(project.root), "test", task_kind(project.task))
    answer = answers_for(project, test.images)
    spec = project.json("models/model.json")
    if project.task == "multilabel":
        probability = answer[[f"p_{name}" for name in test.classes]].to_numpy()
        chosen = [[n for n, p in zip(test.classes, row, strict=True) if p >= spec["threshold"]]
                  for row in probability]  # fmt: skip
        assert [list(labels) for labels in answer["labels"]] == chosen
        accuracy = ((probability >= spec["threshold"]) == (test.targets > 0.5)).mean()
        assert accuracy == pytest.approx(project.json("metrics/test.json")["accuracy_multi"])
    else:  # the targets' own units (pixels), inside y_range
        predicted = answer[["x", "y"]].to_numpy()
        assert ((predicted >= 0) & (predicted <= 32)).all()
        rmse = np.sqrt(((predicted - test.targets) ** 2).mean(axis=0)).mean()
        assert rmse == pytest.approx(project.json("metrics/test.json")["rmse"], rel=1e-4)


def test_the_served_model_answers_image_files_like_the_packaged_one(project):
    from pipeline.data.decode import encode_png

    test = load_split_images(Paths(project.root), "test", task_kind(project.task))
    env = {
        **project.env(),
        "MLFLOW_TRACKING_URI": f"sqlite:///{project.root / 'mlruns' / 'mlflow.db'}",
    }
    files = [encode_png(image) for image in test.images[:6]]
    with served(project.json("models/run.json")["model_uri"], project.root, env) as url:
        status, body = post(url, images_request(files))
    assert status == 200
    served_rows = pd.DataFrame(json.loads(body)["predictions"])
    expected = answers_for(project, test.images[:6])
    for column in expected.columns:
        if column in ("labels",):
            assert [list(v) for v in served_rows[column]] == [list(v) for v in expected[column]]
        else:
            assert served_rows[column].to_numpy() == pytest.approx(
                expected[column].to_numpy(), rel=1e-5
            )


def test_stages_predict_writes_the_tasks_answer_as_a_table(project, tmp_path):
    from PIL import Image

    test = load_split_images(Paths(project.root), "test", task_kind(project.task))
    for i, image in enumerate(test.images[:4]):
        Image.fromarray(image[..., 0]).save(tmp_path / f"{i}.png")
    output = tmp_path / "predictions.csv"
    project.run(
        "python", "-m", "stages.predict", f"predict.input={tmp_path}", f"predict.output={output}"
    )
    table = pd.read_csv(output, keep_default_na=False)
    expected = answers_for(project, test.images[:4])
    if project.task == "multilabel":  # label lists as a label table writes them
        assert table["labels"].tolist() == [";".join(labels) for labels in expected["labels"]]
    else:
        assert table[["x", "y"]].to_numpy() == pytest.approx(
            expected[["x", "y"]].to_numpy(), rel=1e-5
        )
    assert table["error"].tolist() == [""] * 4
