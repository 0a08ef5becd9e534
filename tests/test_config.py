"""params.yaml is conf/ composed; bad keys and values fail at start (in compose_params.py, before\nparams.yaml is written) with one line naming them."""

import json
import subprocess
import sys
from dataclasses import MISSING, Field, fields, is_dataclass
from enum import EnumMeta
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from pipeline.core.config import Config, defining_config, to_dict
from pipeline.core.errors import StagewiseError
from pipeline.core.paths import PROJECT_ROOT
from pipeline.tracking.runs import flatten
from stages.common import SEARCH_PATH, group_choices, upstream_overrides, validated
from tests.conftest import compose_config
from tests.project import ProjectCopy


def test_params_yaml_equals_conf_composed():
    result = subprocess.run(
        [sys.executable, "scripts/compose_params.py", "--check"],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_params_yaml_passes_the_schema():
    cfg = validated(OmegaConf.load(PROJECT_ROOT / "params.yaml"))
    assert cfg.data.source == "digits"
    assert cfg.model.arch == "small_cnn"


def test_model_group_switches_architecture():
    assert compose_config("model=resnet18").model.arch == "resnet18"


def test_unknown_key_in_params_is_named():
    cfg = OmegaConf.load(PROJECT_ROOT / "params.yaml")
    cfg.train.lrr = 0.1
    with pytest.raises(StagewiseError, match=r"train\.lrr"):
        validated(cfg)


def test_mistyped_value_is_named():
    cfg = OmegaConf.load(PROJECT_ROOT / "params.yaml")
    cfg.train.epochs = "many"
    with pytest.raises(StagewiseError, match=r"train\.epochs"):
        validated(cfg)


def test_folder_source_requires_a_root():
    with pytest.raises(StagewiseError, match=r"data\.root"):
        compose_config("data=folder")


def schema_fields(schema: type = Config, prefix: str = "") -> list[tuple[str, Field]]:
    """(dotted key, field) for every leaf of the schema."""
    found = []
    for f in fields(schema):
        key = f"{prefix}{f.name}"
        found += schema_fields(f.type, f"{key}.") if is_dataclass(f.type) else [(key, f)]
    return found


# `task` is also a config group (conf/task/): choosing one that does not exist is Hydra's
# error, which lists the options (test below).
CHOICES = [
    (key, f.type) for key, f in schema_fields() if isinstance(f.type, EnumMeta) and key != "task"
]


def test_the_keys_with_fixed_choices_are_enums():
    assert {key for key, _ in CHOICES} >= {
        "data.source", "data.label", "data.resize", "data.duplicates", "split.strategy",
        "split.leakage", "train.device",
    }  # fmt: skip


def test_an_unknown_task_fails_at_start_listing_the_tasks():
    with pytest.raises(
        Exception, match=r"task/nope[\s\S]*multilabel[\s\S]*regression[\s\S]*single_label"
    ):
        compose_config("task=nope")


@pytest.mark.parametrize(("key", "choices"), CHOICES, ids=[key for key, _ in CHOICES])
def test_a_value_outside_the_choices_fails_at_start_naming_key_and_choices(key, choices):
    with pytest.raises(StagewiseError) as raised:
        compose_config(f"{key}=nope")
    message = str(raised.value)
    assert "\n" not in message
    assert f"{key}: Invalid value 'nope', expected one of [{', '.join(choices)}]" in message


def test_no_schema_field_has_a_default_so_conf_is_the_one_source_of_values():
    with_default = [
        key for key, f in schema_fields() if f.default is not MISSING or f.default_factory is not MISSING
    ]  # fmt: skip
    assert with_default == []


def test_a_key_missing_from_params_is_refused():
    cfg = OmegaConf.load(PROJECT_ROOT / "params.yaml")
    del cfg.train.fine_tune.freeze_epochs
    with pytest.raises(StagewiseError, match=r"train\.fine_tune\.freeze_epochs: .*missing"):
        validated(cfg)


def test_the_config_as_a_dict_is_params_yaml_in_plain_values():
    """MLflow params and config.yaml, and the config digest, see strings, not Enum members."""
    cfg = compose_config()
    params = yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())
    assert yaml.safe_load(yaml.safe_dump(to_dict(cfg))) == params  # safe_dump refuses Enums
    assert yaml.safe_dump(defining_config(cfg))
    assert flatten(to_dict(cfg))["split.strategy"] == params["split"]["strategy"] == "random"
    assert json.dumps(cfg.train.device) == '"auto"' and f"{cfg.data.resize}" == "squish"


def stage_config(params: Path, *arguments: str) -> Config:
    """What a stage's command line composes (stages/common.py): that params.yaml, conf/'s
    groups on the search path."""
    with initialize_config_dir(config_dir=str(params.parent), version_base=None):
        overrides = [SEARCH_PATH, *group_choices(list(arguments), params)]
        return validated(compose(config_name=params.stem, overrides=overrides))


@pytest.mark.parametrize("task", ["multilabel", "regression"])
def test_a_group_chosen_on_a_stage_command_line_keeps_the_tasks_settings(tmp_path, task):
    """The task is applied last in conf/ (label smoothing 0, regression's augmentation off);
    `python -m stages.train train=fine_tune` merged conf/train/fine_tune.yaml over params.yaml
    and brought single-label's back, as `dvc exp run -S train=fine_tune` does not."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(to_dict(compose_config(f"task={task}"))))
    expected = compose_config(f"task={task}", "train=fine_tune").train
    assert stage_config(params, "train=fine_tune").train == expected
    assert expected.label_smoothing == 0 and expected.augment.crop == (
        1 if task == "regression" else 0.35
    )
    flip = stage_config(params, "train=fine_tune", "train.augment.flip=true").train.augment.flip
    assert flip is True  # the command line's own keys still win


def test_a_stage_sweep_of_the_task_is_refused_like_one_of_data_or_split():
    """A stage sweep trains on the data ingested for params.yaml's task; ingest reads labels
    as the task says, so another task needs `dvc exp run -S task=...` instead."""
    sweep = ["task=multilabel,regression", "train.lr=0.1,0.2", "split.seed=1", "+data.x=1"]
    assert upstream_overrides(sweep) == ["task=multilabel,regression", "split.seed=1", "+data.x=1"]
    # no such task file: left to Hydra, which names the choices (it raised FileNotFoundError)
    assert group_choices(["task=nope", "train=fine_tune"]) == ["+task=nope", "+train=fine_tune"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> ProjectCopy:
    return ProjectCopy.create(tmp_path_factory.mktemp("compose"))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.epochs=abc", "train.epochs: Value 'abc' of type 'str' could not be converted"),
        ("train.epocs=3", "train.epocs: no such key; did you mean train.epochs?"),
        ("model=nope", "model=nope: there is no conf/model/nope.yaml; use one of "),
        ("split.strategy=randm", "split.strategy: Invalid value 'randm', expected one of"),
        ("data=folder", "data.root: "),  # ??? in conf/data/folder.yaml: a value is needed
    ],
)
def test_compose_refuses_a_bad_override_in_one_line_and_keeps_params_yaml(
    project, override, expected
):
    before = (project.root / "params.yaml").read_bytes()
    result = project.run("python", "scripts/compose_params.py", override, check=False)
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: config: {expected}")
    assert result.stderr.count("\n") == 1, result.stderr
    assert (project.root / "params.yaml").read_bytes() == before


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data=folder", "data.root=/no/such/photos"], "data.root=/no/such/photos: no such file"),
        (["data=table", "data.root=data"], "data.table=data/labels.csv: no such file or folder; "),
    ],
)
def test_compose_refuses_a_dataset_that_is_not_there_in_one_line(project, overrides, expected):
    result = project.run("python", "scripts/compose_params.py", *overrides, check=False)
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: config: {expected}"), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_compose_writes_a_good_override(project):
    project.compose("train.epochs=3")
    assert "  epochs: 3\n" in (project.root / "params.yaml").read_text()
    project.compose()
    assert project.run("python", "scripts/compose_params.py", "--check").returncode == 0


def test_run_sh_stops_on_a_typo_before_dvc_runs(project):
    before = (project.root / "params.yaml").read_bytes()
    result = project.run("bash", "scripts/run.sh", "train.epochs=abc", check=False)
    assert result.returncode != 0
    # only compose_params's line: DVC would print its stages (and delete their outputs)
    assert (result.stdout + result.stderr).strip().startswith("error: config: train.epochs: ")
    assert (result.stdout + result.stderr).count("\n") == 1
    assert (project.root / "params.yaml").read_bytes() == before
