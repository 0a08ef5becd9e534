"""Transfer learning, measured: a small CNN pretrained on digits 0-4 (an MLflow run of this
project) is fine-tuned on digits 5-9 from five labelled images per class, and beats the same
architecture trained from scratch for the same number of epochs (15, one batch each)."""

import logging
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from sklearn.datasets import load_digits

from pipeline.core.io import read_json
from pipeline.core.paths import ModelFiles, Paths
from pipeline.model.weights import head_keys
from pipeline.tracking.models import run_model_files
from pipeline.train.learner import create_learner
from stages import ingest, normalize_stats, split, train
from tests.conftest import compose_config

PRETRAIN, FINE_TUNE = range(5), range(5, 10)
FEW_SHOT = ["train.batch_size=25", "train.lr=0.003"]
FINE_TUNE_EPOCHS = [
    "train.fine_tune.freeze_epochs=3",
    "train.epochs=12",
    "train.fine_tune.lr_mult=10",
]


def write_digits(root: Path, classes: range, per_split: dict[str, int] | None) -> Path:
    """sklearn's digits as 8x8 PNGs, <root>/<label>/ or <root>/<split>/<label>/ with counts."""
    digits = load_digits()
    for label in classes:
        images = digits.images[digits.target == label]
        folders = [("", len(images))] if per_split is None else list(per_split.items())
        start = 0
        for folder, count in folders:
            out = root / folder / str(label)
            out.mkdir(parents=True)
            for i, image in enumerate(images[start : start + count]):
                Image.fromarray((image * 255 / 16).astype(np.uint8)).save(out / f"{start + i}.png")
            start += count
    return root


def prepare(paths: Paths, *overrides: str):
    cfg = compose_config("data=folder", "data.image_size=8", "data.channels=1", *overrides)
    for stage in (ingest, split, normalize_stats):
        stage.run(cfg, paths)
    return cfg


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory) -> tuple[Paths, str]:
    """A small CNN trained on digits 0-4; its MLflow run holds the model to start from."""
    tmp = tmp_path_factory.mktemp("pretrain")
    paths = Paths(tmp / "project")
    cfg = prepare(paths, f"data.root={write_digits(tmp / 'digits04', PRETRAIN, None)}",
                  "train.epochs=20", "split=random")  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the project's own store
        train.run(cfg, paths)
    return paths, read_json(ModelFiles(paths.model_dir).run, "train")["run_id"]


@pytest.mark.parametrize("seed", [0, 1])
def test_fine_tuning_from_an_earlier_run_beats_training_from_scratch(
    pretrained, tmp_path, caplog, seed
):
    pretrain_paths, run_id = pretrained
    few = write_digits(tmp_path / "digits59", FINE_TUNE, {"train": 5, "valid": 60, "test": 20})
    paths = Paths(tmp_path / "project")
    (paths.root).mkdir()
    (paths.root / "mlruns").symlink_to(pretrain_paths.mlruns)  # one MLflow store for both
    data = [f"data.root={few}", "data.split_folders=true", "split=folder", f"seed={seed}"]
    scratch_cfg = prepare(paths, *data, *FEW_SHOT, "train.epochs=15")
    fine_cfg = compose_config(
        "data=folder", "data.image_size=8", "data.channels=1", *data, *FEW_SHOT,
        f"model.weights=runs:/{run_id}", *FINE_TUNE_EPOCHS,
    )  # fmt: skip

    # The weights are really loaded: every body tensor equals the pretrained run's.
    source = load_file(str(ModelFiles(pretrain_paths.model_dir).weights))
    with caplog.at_level(logging.INFO):
        learner = create_learner(fine_cfg, paths, partial(run_model_files, paths))
    head = head_keys(learner.model)
    for key, value in learner.model.state_dict().items():
        if key not in head:
            assert torch.equal(value, source[key]), key
    assert f"from runs:/{run_id}" in caplog.text

    fine_error = train.run(fine_cfg, paths)
    scratch_error = train.run(scratch_cfg, paths)
    print(f"\nvalid error (300 images), 5 labels/class, 15 epochs, seed {seed}: "
          f"fine-tuned {fine_error:.3f}, from scratch {scratch_error:.3f}")  # fmt: skip
    assert fine_error < scratch_error - 0.1
