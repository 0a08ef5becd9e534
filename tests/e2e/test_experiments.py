"""DVC experiments on the real pipeline: `dvc exp run` reruns only what its params affect."""

import pytest

from tests.project import (
    ProjectCopy,
    ran_stages,
)

pytestmark = pytest.mark.e2e


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
    # a config group chosen through DVC's Hydra composition, with an upstream change
    assert exp_run(project, "split.seed=7", "train.epochs=1", "model=resnet18") == [
        "split", "normalize-stats", "train", "lr-find", "evaluate", "test-holdout",
    ]  # fmt: skip
    assert project.json("models/model.json")["arch"] == "resnet18"
    header = project.run("dvc", "exp", "show", "--csv").stdout.splitlines()[0].split(",")
    assert {"metrics/test.json:accuracy", "metrics/valid.json:f1_macro", "train.epochs"} <= set(
        header
    )
