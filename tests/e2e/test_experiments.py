"""DVC experiments on the real pipeline: `dvc exp run` reruns only what its params affect."""

import pytest
import yaml

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
    # a config group chosen through DVC's Hydra composition, with an upstream change (the
    # train group: a torchvision model here cost 25 s of lr-find; tests/test_models.py builds,
    # saves and loads one)
    assert exp_run(project, "split.seed=7", "train.epochs=1", "train=fine_tune", tiny_model) == [
        "split", "normalize-stats", "train", "lr-find", "evaluate", "test-holdout",
    ]  # fmt: skip
    params = yaml.safe_load((project.root / "params.yaml").read_text())
    assert params["train"]["augment"]["crop"] == 0.35 and params["train"]["epochs"] == 1
    header = project.run("dvc", "exp", "show", "--csv").stdout.splitlines()[0].split(",")
    assert {"metrics/test.json:accuracy", "metrics/valid.json:f1_macro", "train.epochs"} <= set(
        header
    )
