"""The real pipeline, end to end: `dvc repro` and MLflow, the packaged and served model,
the holdout ledger, in a copy of a project that ran the tiny pipeline once per session."""

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.core.paths import Paths
from tests.project import (
    ALL_STAGES,
    TINY,
    ProjectCopy,
    copy_of_template,
    mlflow_client,
    pipeline_template,
    ran_stages,
)

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def first_repro(tmp_path_factory) -> dict:
    """The session's first `dvc repro` (returncode, stdout, stderr), warnings shown."""
    return pipeline_template(tmp_path_factory)[1]


@pytest.fixture(scope="module")
def project(tmp_path_factory, first_repro) -> ProjectCopy:
    assert ran_stages(first_repro["stdout"]) == ALL_STAGES
    return copy_of_template(tmp_path_factory, "pipeline")


def test_repro_writes_every_output_and_then_is_up_to_date(project):
    test = project.json("metrics/test.json")
    valid = project.json("metrics/valid.json")
    assert 0.2 < test["accuracy"] <= 1 and test["images"] == 359
    assert valid["images"] == 359 and "per_class" not in valid  # keeps `dvc exp show` readable
    per_class = (project.root / "plots/valid/per_class.csv").read_text().splitlines()
    assert per_class[0] == "class,precision,recall,f1,support" and len(per_class) == 11
    confusion = (project.root / "plots/valid/confusion.csv").read_text().splitlines()
    assert confusion[0] == "actual,predicted" and len(confusion) == 360
    history = (project.root / "plots/train/history.csv").read_text().splitlines()
    assert len(history) == 3
    lr_curve = (project.root / "plots/lr_find/curve.csv").read_text().splitlines()
    assert lr_curve[0] == "lr,log10_lr,loss" and len(lr_curve) > 20
    assert 1e-6 < project.json("metrics/lr_find.json")["suggested_lr"] < 10
    assert (project.root / "plots/lr_find/curve.png").read_bytes()[:4] == b"\x89PNG"
    again = project.run("dvc", "repro")
    assert ran_stages(again.stdout) == []
    assert "Data and pipelines are up to date." in again.stdout


def test_a_first_run_prints_no_library_warnings_or_mlflow_chatter(first_repro):
    noise = [
        line
        for line in first_repro["stderr"].splitlines()
        if "warning" in line.lower() or " INFO mlflow" in line or "font cache" in line
    ]
    assert noise == []


def test_one_mlflow_run_holds_config_curves_metrics_and_model(project):
    run_id = project.json("models/run.json")["run_id"]
    client = mlflow_client(project)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "2" and run.data.params["model.arch"] == "small_cnn"
    assert run.data.params["split.seed"] == "42"
    for name in ("train_loss", "valid_loss", "valid_accuracy", "valid_error_rate", "lr"):
        steps = {m.step for m in client.get_metric_history(run_id, f"epoch/{name}")}
        assert sorted(steps) == [1, 2], name  # one point per epoch
    # The MLflow UI shows named chart sections first, alphabetically: the curves lead.
    sections = sorted({key.rpartition("/")[0] for key in run.data.metrics} - {""})
    assert sections == ["epoch", "test_per_class", "valid_per_class"]
    per_class = pd.read_csv(project.root / "plots/valid/per_class.csv", index_col="class")
    assert run.data.metrics["valid_per_class/f1_3"] == pytest.approx(per_class.loc[3, "f1"])
    assert project.json("models/run.json")["ui_route"] == (
        f"#/experiments/{run.info.experiment_id}/runs/{run_id}/model-metrics"
        "?workflowType=machine_learning"
    )
    assert run.data.metrics["valid_accuracy"] == pytest.approx(
        project.json("metrics/valid.json")["accuracy"]
    )
    test = project.json("metrics/test.json")
    assert run.data.metrics["test_accuracy"] == pytest.approx(test["accuracy"])
    assert run.data.metrics["valid_f1_macro"] == pytest.approx(
        project.json("metrics/valid.json")["f1_macro"]
    )
    assert len(run.data.tags["mlflow.source.git.commit"]) == 40
    assert (
        run.data.tags["dvc.md5.data/split/split.parquet"]
        == project.lock_outs("split")["data/split/split.parquet"]
    )
    assert run.data.tags["test_holdout.used"] == "true"
    artifacts = {a.path for a in client.list_artifacts(run_id, "valid")}
    assert {
        "valid/confusion_matrix.png",
        "valid/top_losses.png",
        "valid/top_losses.csv",
        "valid/most_confused.csv",
    } <= artifacts
    valid_metrics = project.json("metrics/valid.json")
    for name in ("balanced_accuracy", "f1_weighted", "log_loss", "top_3_accuracy"):
        assert run.data.metrics[f"valid_{name}"] == pytest.approx(valid_metrics[name]), name
    top = (project.root / "plots/valid/top_losses.csv").read_text().splitlines()
    assert top[0] == "id,actual,predicted,loss,probability" and len(top) == 17
    assert (
        client.get_experiment(run.info.experiment_id).artifact_location
        == (project.root / "mlruns/artifacts").as_uri()
    )
    assert list((project.root / "mlruns/artifacts").glob("**/valid/confusion_matrix.png"))
    inputs = {d.dataset.name: d.dataset.digest for d in run.inputs.dataset_inputs}
    report = project.json("data/split/report.json")["splits"]
    splits = {split: report[split]["digest"][:32] for split in ("train", "valid", "test")}
    # and the raw dataset, by the md5 DVC recorded for data.root (the embedded digits)
    digits = project.lock_deps("ingest")["data/raw/digits"].removesuffix(".dir")
    assert inputs == {**splits, "digits": digits}


def test_packaged_model_predicts_raw_images_like_test_holdout(project):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project.root / 'mlruns' / 'mlflow.db'}")
    from pipeline.data.split import load_split_images

    model = mlflow.pyfunc.load_model(project.json("models/run.json")["model_uri"])
    test = load_split_images(Paths(project.root), "test")
    predicted = model.predict(pd.DataFrame({"pixels": list(test.images)}))["label"].to_numpy()
    accuracy = float((predicted == np.array(test.classes)[test.targets]).mean())
    assert accuracy == pytest.approx(project.json("metrics/test.json")["accuracy"])
    larger_rgb = np.repeat(
        np.repeat(np.repeat(test.images[:8], 4, axis=1), 4, axis=2), 3, axis=3
    )  # 32x32x3
    answer = model.predict(pd.DataFrame({"pixels": list(larger_rgb)}))  # any size and channels
    assert len(answer) == 8 and set(answer["label"]) <= set(test.classes)


def test_packaged_model_takes_image_files_as_paths_or_bytes(project, tmp_path):
    import io

    import mlflow
    from PIL import Image

    from pipeline.data.split import load_split_images

    mlflow.set_tracking_uri(f"sqlite:///{project.root / 'mlruns' / 'mlflow.db'}")
    model = mlflow.pyfunc.load_model(project.json("models/run.json")["model_uri"])
    test = load_split_images(Paths(project.root), "test")
    images = test.images[:6, ..., 0]
    paths = []
    for i, image in enumerate(images[:3]):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    encoded = []
    for image in images[3:]:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    (tmp_path / "broken.png").write_bytes(b"not a png")
    answer = model.unwrap_python_model().predict(
        None, [*paths, *encoded, str(tmp_path / "broken.png")]
    )
    expected = model.predict(pd.DataFrame({"pixels": list(test.images[:6])}))["label"].tolist()
    assert answer["label"].tolist()[:6] == expected and answer["error"].tolist()[:6] == [""] * 6
    assert answer["path"][3] == f"<{len(encoded[0])} bytes>"
    assert answer["error"][6] != "" and pd.isna(answer["label"][6])


def test_training_input_errors_and_the_one_batch_sanity_check(project):
    from pipeline.core.errors import StagewiseError
    from stages import train
    from tests.conftest import compose_config

    before = (project.root / "models/model.safetensors").read_bytes()
    # in this process (each `python -m stages.train` costs seconds of imports); the command
    # line's one-line exit is checked with the last one
    for overrides, message in [
        (["model.weights=nowhere/weights.pt"], "weights.pt: no such file"),
        (["train.resume=true"], "train.resume=true, but there is no checkpoint at"),
        (["model.arch=resnet18", "model.weights=IMAGENET9K"], "valid: DEFAULT, IMAGENET1K_V1"),
        (["model.arch=resnet19"], "valid names: small_cnn"),
    ]:
        with pytest.raises(StagewiseError) as raised:
            train.run(compose_config(*TINY, *overrides), Paths(project.root))
        assert message in str(raised.value) and "\n" not in str(raised.value)
    overrides = ["train.overfit_one_batch=true", "train.lr=1e-7"]
    result = project.run("python", "-m", "stages.train", *overrides, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 2 and "could not overfit one batch" in output
    assert "Traceback" not in output
    sane = project.run("python", "-m", "stages.train", "train.overfit_one_batch=true")
    assert "sanity check passed: small_cnn overfit one batch" in sane.stdout + sane.stderr
    assert (project.root / "models/model.safetensors").read_bytes() == before


def test_scoring_another_configuration_on_the_test_split_is_recorded_and_warned(project, caplog):
    assert project.json("metrics/test.json")["test_evaluations"] == 1
    project.compose("train.epochs=1", "model.widths=[8,16]")
    result = project.run("dvc", "repro")
    assert ran_stages(result.stdout) == ["train", "evaluate", "test-holdout"]
    assert "THE TEST SET HAS BEEN USED BEFORE" in result.stdout + result.stderr
    ledger = project.json("data/holdout_ledger.json")
    assert len(ledger) == 2 and len({e["config_digest"] for e in ledger}) == 2
    assert project.json("metrics/test.json")["test_evaluations"] == 2
    run = mlflow_client(project).get_run(project.json("models/run.json")["run_id"])
    assert (
        run.data.tags["test_holdout.evaluations"] == "2"
        and run.data.metrics["test_evaluations"] == 2
    )
    refused = project.run(
        "python", "-m", "stages.test_holdout", "-m", "eval.batch_size=64,128", check=False
    )
    assert (
        refused.returncode != 0 and "refuses to run in a sweep" in refused.stdout + refused.stderr
    )
    assert len(project.json("data/holdout_ledger.json")) == 2
    # A model trained with a command-line override under the same params.yaml is another
    # configuration: the ledger counts the trained run's, not test-holdout's own.
    from stages import test_holdout, train
    from tests.conftest import compose_config

    params = (*TINY, "train.epochs=1", "model.widths=[8,16]")  # params.yaml's, as composed
    train.run(compose_config(*params, "seed=7"), Paths(project.root))  # in this process: faster
    test_holdout.run(compose_config(*params), Paths(project.root))
    assert project.json("metrics/test.json")["test_evaluations"] == 3
    assert "THE TEST SET HAS BEEN USED BEFORE" in caplog.text


def test_test_holdout_registers_a_candidate_when_asked(project, caplog):
    from stages import test_holdout
    from tests.conftest import compose_config

    # in this process: a `python -m stages.test_holdout` costs seconds of imports
    test_holdout.run(
        compose_config(*TINY, "eval.register_as=digits", "eval.register_min_accuracy=0.0"),
        Paths(project.root),
    )
    version = mlflow_client(project).get_model_version_by_alias("digits", "candidate")
    assert version.source == project.json("models/run.json")["model_uri"]
    assert float(version.tags["test_accuracy"]) == pytest.approx(
        project.json("metrics/test.json")["accuracy"]
    )
    test_holdout.run(
        compose_config(*TINY, "eval.register_as=strict", "eval.register_min_accuracy=1.01"),
        Paths(project.root),
    )
    assert not mlflow_client(project).search_registered_models("name = 'strict'")
    accuracy = project.json("metrics/test.json")["accuracy"]
    assert (
        f"not registered as strict: test accuracy {accuracy:.4g} is under "
        "eval.register_min_accuracy=1.01" in caplog.text
    )


def test_served_model_answers_raw_pixels_like_test_holdout(project):
    from pipeline.data.split import load_split_images
    from tests.serving import post, served

    env = {
        **project.env(),
        "MLFLOW_TRACKING_URI": f"sqlite:///{project.root / 'mlruns' / 'mlflow.db'}",
    }
    test = load_split_images(Paths(project.root), "test")
    pixels = {"columns": ["pixels"], "data": [[image.tolist()] for image in test.images]}
    with served(project.json("models/run.json")["model_uri"], project.root, env) as url:
        status, answer = post(url, {"dataframe_split": pixels})
        assert status == 200
        labels = np.array([row["label"] for row in json.loads(answer)["predictions"]])
        accuracy = float((labels == np.array(test.classes)[test.targets]).mean())
        assert accuracy == pytest.approx(project.json("metrics/test.json")["accuracy"])
        status, error = post(url, b'{"inputs": "not pixels"}')
        assert 400 <= status < 500 and json.loads(error).get("message")
