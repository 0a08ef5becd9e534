"""params.yaml is conf/ composed; bad keys fail at start with a message naming them."""

import subprocess
import sys

import pytest
from omegaconf import OmegaConf

from pipeline.errors import StagewiseError
from pipeline.paths import PROJECT_ROOT
from stages.common import validated
from tests.conftest import compose_config


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
