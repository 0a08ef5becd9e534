"""The real pipeline, end to end: `dvc repro`, DVC experiments, Hydra multirun and MLflow,
in a temporary copy of the project with a tiny training config."""

import numpy as np
import pandas as pd
import pytest

from pipeline.paths import Paths
from tests.project import ProjectCopy, ran_stages

pytestmark = pytest.mark.e2e

TINY = ("train.epochs=2", "model.widths=[8,16]")
ALL_STAGES = [
    "ingest", "split", "normalize-stats", "train", "lr-find", "evaluate", "test-holdout",
]  # fmt: skip


DATA_STAGES = ("ingest", "split", "normalize-stats")
METRICS = ("metrics/train.json", "metrics/valid.json", "metrics/test.json")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> ProjectCopy:
    copy = ProjectCopy.create(tmp_path_factory.mktemp("project"))
    copy.compose(*TINY)
    result = copy.run("dvc", "repro")
    assert ran_stages(result.stdout) == ALL_STAGES
    return copy


@pytest.fixture(scope="module")
def first_results(project) -> dict:
    """Data hashes and metrics of the first run, before other tests change the workspace."""
    return {
        "outs": project.lock_outs(*DATA_STAGES),
        **{m: project.json(m) for m in METRICS},
    }


def mlflow_client(project: ProjectCopy):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{project.root / 'mlruns' / 'mlflow.db'}")


def test_repro_writes_every_output_and_then_is_up_to_date(project, first_results):
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


def test_one_mlflow_run_holds_config_curves_metrics_and_model(project):
    run_id = project.json("models/run.json")["run_id"]
    client = mlflow_client(project)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "2" and run.data.params["model.arch"] == "small_cnn"
    assert run.data.params["split.seed"] == "42"
    for name in ("train_loss", "valid_loss", "valid_accuracy", "valid_error_rate", "lr"):
        # one point per epoch; evaluate adds its own valid_* numbers at the last epoch
        assert sorted({m.step for m in client.get_metric_history(run_id, name)}) == [1, 2], name
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
    assert inputs == {split: report[split]["digest"][:32] for split in ("train", "valid", "test")}


def test_packaged_model_predicts_raw_images_like_test_holdout(project):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{project.root / 'mlruns' / 'mlflow.db'}")
    from pipeline.split import load_split_images

    model = mlflow.pyfunc.load_model(project.json("models/run.json")["model_uri"])
    test = load_split_images(Paths(project.root), "test")
    predicted = model.predict(test.images)["label"].to_numpy()
    accuracy = float((predicted == np.array(test.classes)[test.targets]).mean())
    assert accuracy == pytest.approx(project.json("metrics/test.json")["accuracy"])
    larger_rgb = np.repeat(
        np.repeat(np.repeat(test.images[:8], 4, axis=1), 4, axis=2), 3, axis=3
    )  # 32x32x3
    answer = model.predict(larger_rgb)  # the signature admits any size and channel count
    assert len(answer) == 8 and set(answer["label"]) <= set(test.classes)


def test_packaged_model_takes_image_files_as_paths_or_bytes(project, tmp_path):
    import io

    import mlflow
    from PIL import Image

    from pipeline.split import load_split_images

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
    expected = model.predict(test.images[:6])["label"].tolist()
    assert answer["label"].tolist()[:6] == expected and answer["error"].tolist()[:6] == [""] * 6
    assert answer["path"][3] == f"<{len(encoded[0])} bytes>"
    assert answer["error"][6] != "" and pd.isna(answer["label"][6])


def test_stage_multirun_is_a_parent_run_with_a_child_per_job(project):
    before = (project.root / "models/model.safetensors").read_bytes()
    client = mlflow_client(project)
    experiment = client.get_experiment_by_name("stagewise")
    sweep = project.run(
        "python",
        "-m",
        "stages.train",
        "-m",
        "train.lr=0.001,-1,0.003",
        "train.epochs=1",
        check=False,
    )
    assert sweep.returncode == 2  # one job failed; the others still ran
    (parent,) = client.search_runs([experiment.experiment_id], "tags.`sweep.overrides` != ''")
    children = client.search_runs(
        [experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    by_lr = {r.data.params["train.lr"]: r for r in children}
    assert set(by_lr) == {"0.001", "-1.0", "0.003"}
    assert (
        by_lr["-1.0"].info.status == "FAILED"
        and "must be positive" in by_lr["-1.0"].data.tags["error"]
    )
    assert by_lr["0.001"].info.status == by_lr["0.003"].info.status == "FINISHED"
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["jobs"] == 3 and parent.data.metrics["failed_jobs"] == 1
    best = min((by_lr["0.001"], by_lr["0.003"]), key=lambda r: r.data.metrics["valid_error_rate"])
    assert parent.data.tags["sweep.best_run_id"] == best.info.run_id
    project.run("python", "-m", "stages.compare", f"compare.sweep={parent.info.run_id}")
    table = pd.read_csv(project.root / "comparison" / f"{parent.info.run_id}.csv")
    assert list(table.columns) == [
        "run_id",
        "status",
        "valid_error_rate",
        "train.lr",
    ]  # only what differs
    assert table["run_id"].iloc[0] == best.info.run_id and table["status"].iloc[-1] == "FAILED"
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "comparison")}
    assert {f"comparison/{parent.info.run_id}.{ext}" for ext in ("csv", "md", "png")} == logged
    assert (project.root / "models/model.safetensors").read_bytes() == before
    assert len(list((project.root / "multirun").glob("*/*/*/models/model.safetensors"))) == 2
    assert ran_stages(project.run("dvc", "repro").stdout) == []


def test_ctrl_c_during_a_sweep_leaves_no_run_running(project):
    import signal
    import subprocess
    import time

    client = mlflow_client(project)
    experiment = client.get_experiment_by_name("stagewise")
    sweep = subprocess.Popen(
        ["python", "-m", "stages.train", "-m", "train.lr=0.001,0.002", "train.epochs=500"],
        cwd=project.root, env=project.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while not client.search_runs(
        [experiment.experiment_id],
        "attributes.status = 'RUNNING' and tags.mlflow.parentRunId != ''",
    ):
        assert time.monotonic() < deadline and sweep.poll() is None
        time.sleep(0.5)
    sweep.send_signal(signal.SIGINT)
    assert sweep.wait(timeout=60) != 0
    assert client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'") == []
    killed = client.search_runs([experiment.experiment_id], "attributes.status = 'KILLED'")
    assert len(killed) == 2  # the job's run and the sweep's parent


def test_sigterm_during_training_marks_the_run_killed_and_keeps_the_model(project):
    import subprocess
    import time

    before = (project.root / "models/model.safetensors").read_bytes()
    client = mlflow_client(project)
    experiment = client.get_experiment_by_name("stagewise")
    training = subprocess.Popen(["python", "-m", "stages.train", "train.epochs=500"], cwd=project.root,
                                env=project.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'"):
        assert time.monotonic() < deadline and training.poll() is None
        time.sleep(0.5)
    training.terminate()
    assert training.wait(timeout=60) == 143
    assert client.search_runs([experiment.experiment_id], "attributes.status = 'RUNNING'") == []
    (latest,) = client.search_runs(
        [experiment.experiment_id], order_by=["attributes.start_time DESC"], max_results=1
    )
    assert latest.info.status == "KILLED" and latest.data.params["train.epochs"] == "500"
    assert (project.root / "models/model.safetensors").read_bytes() == before


def test_a_killed_training_resumes_in_its_mlflow_run_with_identical_weights(project):
    import signal
    import subprocess
    import time

    import torch

    # A checkpoint on disk after each epoch for the SIGKILL to find (a SIGKILL skips the write
    # on interruption). The uninterrupted run keeps the default interval: the interval changes
    # neither the weights nor the checkpoint's identity.
    command = ["python", "-m", "stages.train", "train.epochs=6", "model.widths=[8,16]"]
    project.run(*command)
    command.append("train.checkpoint_every_s=0")
    uninterrupted = (project.root / "models/model.safetensors").read_bytes()
    checkpoint = project.root / "checkpoints/train.pt"
    assert not checkpoint.exists()  # removed once training finished
    training = subprocess.Popen(command, cwd=project.root, env=project.env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while not (checkpoint.exists() and torch.load(checkpoint, weights_only=True)["epoch"] >= 2):
        assert time.monotonic() < deadline and training.poll() is None
        time.sleep(0.05)
    training.send_signal(signal.SIGKILL)  # no chance to clean up: the checkpoint must do
    training.wait(timeout=30)
    killed_at = torch.load(checkpoint, weights_only=True)
    assert 2 <= killed_at["epoch"] < 6
    resumed = project.run(*command, "train.resume=true")
    assert f"resuming after epoch {killed_at['epoch']} of 6" in resumed.stdout + resumed.stderr
    assert (project.root / "models/model.safetensors").read_bytes() == uninterrupted
    run_id = project.json("models/run.json")["run_id"]
    assert run_id == killed_at["run_id"]
    client = mlflow_client(project)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["resumed"] == "true"
    steps = {m.step for m in client.get_metric_history(run_id, "valid_loss")}
    assert steps == set(range(1, 7))
    assert not checkpoint.exists()


def test_training_input_errors_and_the_one_batch_sanity_check(project):
    before = (project.root / "models/model.safetensors").read_bytes()
    for overrides, message in [
        (["model.weights=nowhere/weights.pt"], "weights.pt: no such file"),
        (["train.resume=true"], "train.resume=true, but there is no checkpoint at"),
        (["model.arch=resnet18", "model.weights=IMAGENET9K"], "valid: DEFAULT, IMAGENET1K_V1"),
        (["model.arch=resnet19"], "valid names: small_cnn"),
        (["train.overfit_one_batch=true", "train.lr=1e-7"], "could not overfit one batch"),
    ]:
        result = project.run("python", "-m", "stages.train", *overrides, check=False)
        output = result.stdout + result.stderr
        assert result.returncode == 2 and message in output and "Traceback" not in output
    sane = project.run("python", "-m", "stages.train", "train.overfit_one_batch=true")
    assert "sanity check passed: small_cnn overfit one batch" in sane.stdout + sane.stderr
    assert (project.root / "models/model.safetensors").read_bytes() == before


def test_scoring_another_configuration_on_the_test_split_is_recorded_and_warned(project):
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


def test_test_holdout_registers_a_candidate_when_asked(project):
    project.run(
        "python",
        "-m",
        "stages.test_holdout",
        "eval.register_as=digits",
        "eval.register_min_accuracy=0.0",
    )
    version = mlflow_client(project).get_model_version_by_alias("digits", "candidate")
    assert version.source == project.json("models/run.json")["model_uri"]
    assert float(version.tags["test_accuracy"]) == pytest.approx(
        project.json("metrics/test.json")["accuracy"]
    )
    project.run(
        "python",
        "-m",
        "stages.test_holdout",
        "eval.register_as=strict",
        "eval.register_min_accuracy=1.01",
    )
    assert not mlflow_client(project).search_registered_models("name = 'strict'")


def test_served_model_answers_raw_pixels_like_test_holdout(project):
    import json
    import socket
    import subprocess
    import time
    import urllib.error
    import urllib.request

    from pipeline.split import load_split_images

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **project.env(),
        "MLFLOW_TRACKING_URI": f"sqlite:///{project.root / 'mlruns' / 'mlflow.db'}",
    }
    model_uri = project.json("models/run.json")["model_uri"]
    server = subprocess.Popen(
        ["mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)],
        cwd=project.root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def post(body: bytes) -> tuple[int, dict]:
        request = urllib.request.Request(
            f"{url}/invocations", body, {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(f"{url}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None, "mlflow models serve exited"
                time.sleep(0.5)
        test = load_split_images(Paths(project.root), "test")
        status, answer = post(json.dumps({"inputs": test.images.tolist()}).encode())
        assert status == 200
        labels = np.array([row["label"] for row in answer["predictions"]])
        accuracy = float((labels == np.array(test.classes)[test.targets]).mean())
        assert accuracy == pytest.approx(project.json("metrics/test.json")["accuracy"])
        status, error = post(b'{"inputs": "not pixels"}')
        assert 400 <= status < 500 and error.get("message")
    finally:
        server.terminate()
        server.wait(timeout=30)


def exp_run(project: ProjectCopy, *params: str) -> list[str]:
    """`dvc exp run -S p ...`; the stages it ran."""
    command = ["dvc", "exp", "run"]
    for param in params:
        command += ["-S", param]
    return ran_stages(project.run(*command).stdout)


def test_experiments_rerun_only_what_their_params_affect(project):
    tiny_model = "model.widths=[8,16]"
    # epochs=3: a configuration no earlier test has run, so nothing comes from DVC's cache
    assert exp_run(project, "train.epochs=3", tiny_model) == ["train", "evaluate", "test-holdout"]
    assert exp_run(project, "split.seed=7", "train.epochs=3", tiny_model) == [
        "split", "normalize-stats", "train", "lr-find", "evaluate", "test-holdout",
    ]  # fmt: skip
    assert exp_run(project, "split.seed=7", "train.epochs=1", "model=resnet18") == [
        "train", "lr-find", "evaluate", "test-holdout",
    ]  # fmt: skip
    assert project.json("models/model.json")["arch"] == "resnet18"
    header = project.run("dvc", "exp", "show", "--csv").stdout.splitlines()[0].split(",")
    assert {"metrics/test.json:accuracy", "metrics/valid.json:f1_macro", "train.epochs"} <= set(
        header
    )


def test_queued_experiments_land_in_the_main_mlflow_store_with_the_test_split_sealed(project):
    ledger_before = len(project.json("data/holdout_ledger.json"))
    project.run("git", "add", "-A")
    project.run("git", "commit", "-qm", "baseline for queued experiments")
    for lr in ("0.001", "0.01"):
        project.run("dvc", "exp", "run", "--queue", "-S", f"train.lr={lr}", "-S", "train.epochs=1",
                    "-S", "model.widths=[8,16]")  # fmt: skip
    project.run("dvc", "exp", "run", "--run-all")
    client = mlflow_client(project)
    experiment = client.get_experiment_by_name("stagewise")
    queued = client.search_runs([experiment.experiment_id], "tags.`dvc.exp_name` != ''")
    by_lr = {
        r.data.params["train.lr"]: r
        for r in queued
        if r.data.params["train.lr"] in ("0.001", "0.01")
    }
    assert set(by_lr) == {"0.001", "0.01"}
    for run in by_lr.values():
        assert run.info.status == "FINISHED" and "valid_accuracy" in run.data.metrics
        assert "test_accuracy" not in run.data.metrics  # the test split stays sealed
        assert run.data.tags["test_holdout.sealed"] == "true"
        assert (
            run.data.tags["dvc.exp_name"] in project.run("dvc", "exp", "list", "--name-only").stdout
        )
    assert not list((project.root / ".dvc" / "tmp").glob("**/mlruns/mlflow.db"))
    assert len(project.json("data/holdout_ledger.json")) == ledger_before
    shown = project.run("dvc", "exp", "show", "--csv").stdout
    assert "sealed" in shown.splitlines()[0].split(",")  # unambiguous: shown without its file
    # The winner on valid error, applied to the workspace, is reproduced: nothing to rerun.
    best = min(by_lr.values(), key=lambda r: r.data.metrics["valid_error_rate"])
    project.run("dvc", "exp", "apply", best.data.tags["dvc.exp_name"])
    assert "lr: " + best.data.params["train.lr"] in (project.root / "params.yaml").read_text()
    assert ran_stages(project.run("dvc", "repro").stdout) == []
    assert project.json("metrics/valid.json")["error_rate"] == pytest.approx(
        best.data.metrics["valid_error_rate"]
    )


def test_a_fresh_run_gives_identical_data_hashes_and_metrics(first_results, tmp_path):
    fresh = ProjectCopy.create(tmp_path / "fresh")
    fresh.compose(*TINY)
    fresh.run("dvc", "repro")
    assert fresh.lock_outs(*DATA_STAGES) == first_results["outs"]
    for name in METRICS:
        assert fresh.json(name) == first_results[name], name


def test_whole_pipeline_on_a_folder_of_photos(tmp_path):
    """A user's own folder of RGB JPEGs, one subfolder per class, through every stage."""
    from PIL import Image

    photos = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for c, label in enumerate(("apple", "banana", "cherry")):
        (photos / label).mkdir(parents=True)
        for i in range(12):
            colour = np.array([[220, 40, 40], [230, 210, 60], [120, 20, 60]][c])
            pixels = np.clip(colour + rng.normal(0, 25, (16, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(photos / label / f"{i:02d}.jpg", quality=90)
    copy = ProjectCopy.create(tmp_path / "project")
    copy.compose("data=folder", f"data.root={photos}", "data.image_size=8", "model.widths=[8,16]",
                 "train.epochs=10", "train.batch_size=8", "train.augment.flip=true")  # fmt: skip
    assert ran_stages(copy.run("dvc", "repro").stdout) == ALL_STAGES
    report = copy.json("data/ingested/report.json")
    assert (
        report["images"] == 36 and report["image_shape"] == [8, 8, 3] and report["bad_files"] == []
    )
    spec = copy.json("models/model.json")
    assert spec["classes"] == ["apple", "banana", "cherry"] and spec["channels"] == 3
    assert copy.json("metrics/test.json")["images"] == 6
    assert copy.json("metrics/test.json")["accuracy"] > 0.5  # distinct colours: easy
