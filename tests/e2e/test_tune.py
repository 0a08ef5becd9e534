"""stages.tune on the real digits data in a copy of the project: pruning, a resume after a
SIGKILL, two workers sharing one study, a trial that reuses a finished run, a search whose
every trial fails, and Ctrl-C, each seen in Optuna's storage and in MLflow.
(A bad space is refused before any trial: tests/test_tune.py.)"""

import signal
import subprocess
import sys
import time

import pytest

from tests.project import ProjectCopy, copy_of_template, mlflow_client

pytestmark = pytest.mark.e2e

TINY = ("model.widths=[8,16]", "train.epochs=3")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> ProjectCopy:
    copy = copy_of_template(tmp_path_factory, "tune")
    copy.compose(*TINY)
    return copy


def tune(study: str, *overrides: str) -> list[str]:
    return [sys.executable, "-m", "stages.tune", f"tune.study={study}", *overrides]


def load_study(project: ProjectCopy, name: str):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.load_study(
        study_name=name, storage=f"sqlite:///{project.root / 'mlruns' / 'optuna.db'}"
    )


def states(study) -> dict[int, str]:
    return {t.number: t.state.name for t in study.get_trials()}


def runs_of(project: ProjectCopy, study):
    """The study's parent run and its children, by trial number."""
    client = mlflow_client(project)
    parent = client.get_run(study.user_attrs["mlflow_parent_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    return parent, {int(c.data.tags["tune.trial"]): c for c in children}


def test_a_search_prunes_hopeless_trials_and_records_each_trial_as_a_child_run(project):
    project.run(*tune("pruned", "tune.trials=5", "tune.startup_trials=2", "tune.warmup_epochs=1"))
    study = load_study(project, "pruned")
    found = states(study)
    pruned = sum(state == "PRUNED" for state in found.values())
    assert list(found.values())[:2] == ["COMPLETE"] * 2  # the median pruner's startup trials
    assert set(found.values()) == {"COMPLETE", "PRUNED"} and len(found) == 5 and pruned >= 1
    parent, children = runs_of(project, study)
    assert parent.info.status == "FINISHED" and sorted(children) == sorted(found)
    assert parent.data.metrics["trials"] == 5 and parent.data.metrics["pruned_trials"] == pruned
    for number, child in children.items():
        assert child.info.status == "FINISHED"
        assert (child.data.tags.get("tune.pruned") == "true") == (found[number] == "PRUNED")
        assert float(child.data.params["train.lr"]) == study.trials[number].params["train.lr"]
    assert parent.data.metrics["best_valid_error_rate"] == study.best_value
    assert parent.data.tags["sweep.best_run_id"] == children[study.best_trial.number].info.run_id
    assert (project.root / f"multirun/tune/pruned/trial-{study.best_trial.number}/models").is_dir()


def test_a_killed_search_resumes_by_rerunning_it(project):
    command = tune(
        "resumed", "tune.trials=2", "tune.pruner=none", "tune.heartbeat_s=1", "sweep.reuse=false"
    )  # Optuna's own resume: trials are not to reuse the runs of the search above
    worker = subprocess.Popen(command, cwd=project.root, env=project.env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    client, deadline = mlflow_client(project), time.monotonic() + 120
    while time.monotonic() < deadline:  # kill it while its second trial trains
        time.sleep(0.2)
        training = "tags.`tune.study` = 'resumed' AND tags.`tune.trial` = '1'"
        if client.search_runs([client.get_experiment_by_name("stagewise").experiment_id], training):
            break
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    first = load_study(project, "resumed").trials[0]

    project.run(*command)
    study = load_study(project, "resumed")
    assert states(study) == {0: "COMPLETE", 1: "FAIL", 2: "COMPLETE"}
    assert study.trials[0].value == first.value  # kept, not run again
    assert study.trials[2].params == study.trials[1].params  # the killed trial, retried
    parent, children = runs_of(project, study)
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials"] == 2
    assert children[1].info.status == "KILLED"  # its process died: not left RUNNING
    assert {c.info.status for n, c in children.items() if n != 1} == {"FINISHED"}


def test_two_workers_share_one_study(project):
    command = tune("shared", "tune.trials=4", "tune.pruner=none", "sweep.reuse=false")
    workers = [
        subprocess.Popen(
            command,
            cwd=project.root,
            env=project.env(),
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=300)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outputs
    study = load_study(project, "shared")
    assert states(study) == dict.fromkeys(range(4), "COMPLETE")  # unique numbers, none extra
    assert all("trial " in output for output in outputs)  # both did some
    assert len({tuple(t.params.values()) for t in study.trials}) == 4  # seeds differ per worker
    parent, children = runs_of(project, study)
    assert parent.info.status == "FINISHED" and sorted(children) == list(range(4))


def test_a_trial_with_the_values_of_a_finished_training_reuses_its_run(project):
    """The finished training here is an earlier trial of the study (the space has one value);
    a new study's trial matches an earlier study's run the same way, by config, data and code
    (tests/test_reuse.py): what Optuna's own resume, by study, cannot do."""
    one_value = ("~tune.space", "+tune.space={train:{epochs:{choices:[1]}}}")
    project.run(*tune("repeated", *one_value, "tune.trials=2", "tune.pruner=none"))
    study = load_study(project, "repeated")
    assert states(study) == {0: "COMPLETE", 1: "COMPLETE"}
    assert study.trials[1].value == study.trials[0].value
    parent, children = runs_of(project, study)
    assert "reused_from" not in children[0].data.tags  # trained
    assert children[1].data.tags["reused_from"] == children[0].info.run_id
    assert not any("/" in name for name in children[1].data.metrics)  # no epochs: not trained
    assert study.trials[1].user_attrs["mlflow_run_id"] == children[1].info.run_id
    assert parent.info.status == "FINISHED" and parent.data.metrics["trials"] == 2


def test_a_search_whose_every_trial_fails_stops_at_max_failed_trials(project):
    """A learning rate of 1e6 makes the loss NaN (or training refuse it): every trial fails.
    Optuna counts no failed trial toward tune.trials, so the search used to replace them
    forever, each run logged FINISHED and each failure with a traceback."""
    diverging = ("~tune.space", "+tune.space={train:{lr:{choices:[1.0e+6]}}}")
    command = tune(
        "diverging", *diverging, "tune.trials=3", "tune.max_failed_trials=2",
        "compare.metric=valid_loss", "train.epochs=1",
    )  # fmt: skip
    ran = subprocess.run(command, cwd=project.root, env=project.env(), text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=240)  # fmt: skip
    assert ran.returncode == 2, ran.stdout
    lines = ran.stdout.strip().splitlines()
    assert lines[-1].startswith(
        "error: stopped study diverging: 2 of this run's trials failed "
        "(tune.max_failed_trials=2), the last, trial 1: "
    ), ran.stdout
    assert [line.split(":")[0] for line in lines if " failed: " in line] == [
        "trial 0 failed", "trial 1 failed",
    ]  # fmt: skip
    assert "Traceback" not in ran.stdout and "[W " not in ran.stdout  # Optuna's warnings
    study = load_study(project, "diverging")
    assert states(study) == {0: "FAIL", 1: "FAIL"}
    parent, children = runs_of(project, study)
    assert parent.info.status == "FAILED" and parent.data.metrics["failed_trials"] == 2
    assert [c.info.status for c in children.values()] == ["FAILED"] * 2


def test_ctrl_c_stops_a_search_in_one_line_with_exit_130(project, tmp_path):
    output = tmp_path / "output.txt"
    with output.open("w") as out:
        worker = subprocess.Popen(
            tune("interrupted", "tune.trials=2", "train.epochs=2000", "sweep.reuse=false"),
            cwd=project.root, env=project.env(), text=True, stdout=out, stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )  # fmt: skip
        client, deadline = mlflow_client(project), time.monotonic() + 120
        training = "tags.`tune.study` = 'interrupted' AND tags.`tune.trial` = '0'"
        while not client.search_runs(
            [client.get_experiment_by_name("stagewise").experiment_id], training
        ):
            assert time.monotonic() < deadline and worker.poll() is None, output.read_text()
            time.sleep(0.2)
        worker.send_signal(signal.SIGINT)
        assert worker.wait(timeout=60) == 128 + signal.SIGINT, output.read_text()
    printed = output.read_text()
    assert printed.strip().splitlines()[-1] == (
        "interrupted: study interrupted keeps its finished trials; run the same command again "
        "to resume it"
    )
    assert "Traceback" not in printed and "[W " not in printed
    study = load_study(project, "interrupted")
    parent, children = runs_of(project, study)
    assert parent.info.status == "KILLED" and children[0].info.status == "KILLED"
