"""The fit loop: learns, is deterministic on the CPU, and its transforms are right."""

import os
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch

from pipeline.core.errors import StagewiseError
from pipeline.core.paths import PROJECT_ROOT, Paths
from pipeline.data.split import load_split_images
from pipeline.model.augment import BatchShare, augment, is_identity, random_affine
from pipeline.model.device import Batches, select_device
from pipeline.model.networks import ModelSpec, build_model
from pipeline.model.preprocess import Normalizer, to_float
from pipeline.train.loop import fit
from tests.conftest import compose_config

CFG = compose_config("train.epochs=3")


def train_small(paths: Paths, seed: int = 0, epochs: int = 3):
    train, valid = load_split_images(paths, "train"), load_split_images(paths, "valid")
    device = torch.device("cpu")
    torch.manual_seed(seed)
    spec = ModelSpec("small_cnn", train.classes, 1, 8, [0.3], [0.37], widths=[8, 16], dropout=0.0)
    model = build_model(spec)
    state = fit(
        model,
        Batches.from_numpy(train.images, train.targets, device),
        Batches.from_numpy(valid.images, valid.targets, device),
        replace(CFG.train, epochs=epochs),
        Normalizer.create(spec.mean, spec.std, device),
        seed,
    )
    return model, state.history


def test_fit_learns_digits(digits_paths: Paths):
    _, history = train_small(digits_paths)
    assert history[-1].train_loss < history[0].train_loss
    assert history[-1].value("valid_accuracy") > 0.5  # chance is 0.1
    assert [r.epoch for r in history] == [1, 2, 3]


def test_a_one_cycle_of_exactly_one_warm_up_step_trains():
    # 64 images in batches of 16 for 1 epoch: 4 steps, a quarter of them warm-up.
    rng = np.random.default_rng(0)
    images, targets = rng.integers(0, 256, (64, 8, 8, 1), dtype=np.uint8), np.arange(64) % 2
    data = Batches.from_numpy(images, targets, torch.device("cpu"))
    spec = ModelSpec("small_cnn", ["a", "b"], 1, 8, [0.5], [0.3], widths=[8], dropout=0.0)
    cfg = replace(CFG.train, epochs=1, batch_size=16, pct_start=0.25)
    state = fit(build_model(spec), data, data, cfg, Normalizer.create([0.5], [0.3], data.device), 0)
    assert len(state.history) == 1


def test_same_seed_same_weights_on_cpu(digits_paths: Paths):
    one, history_one = train_small(digits_paths, epochs=2)
    two, history_two = train_small(digits_paths, epochs=2)
    for (name, a), (_, b) in zip(one.state_dict().items(), two.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    assert [r.valid_loss for r in history_one] == [r.valid_loss for r in history_two]


# Trains as the train stage does (create_learner sets the thread count), with torch's default
# thread count (cpu_threads=0, from OMP_NUM_THREADS) and then with the default cpu_threads, and
# prints hashes of the weights.
TRAIN_AND_HASH = """
import hashlib, sys
from pathlib import Path
from pipeline.train.learner import create_learner
from pipeline.train.loop import fit
from pipeline.core.paths import Paths
from tests.conftest import compose_config
for threads in ([\"train.cpu_threads=0\"], []):
    cfg = compose_config("train.epochs=1", "model.widths=[8,16]", *threads)
    learner = create_learner(cfg, Paths(Path(sys.argv[1])), fetch_run_model=None)
    fit(learner.model, learner.train, learner.valid, cfg.train, learner.normalizer, cfg.seed)
    weights = b"".join(t.numpy().tobytes() for t in learner.model.state_dict().values())
    print(hashlib.sha256(weights).hexdigest())
"""


def weights_hashes(paths: Paths, omp_threads: int) -> list[str]:
    env = {**os.environ, "OMP_NUM_THREADS": str(omp_threads), "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-c", TRAIN_AND_HASH, str(paths.root)]
    result = subprocess.run(
        command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, check=True
    )
    return result.stdout.split()[-2:]


def test_cpu_weights_do_not_depend_on_omp_num_threads(digits_paths: Paths):
    default_one, fixed_one = weights_hashes(digits_paths, 1)
    default_two, fixed_two = weights_hashes(digits_paths, 2)
    # Two threads split the sums of conv/BatchNorm/matmul backward differently from one...
    assert default_one != default_two
    # ...so training fixes the count (train.cpu_threads, default 1) whatever the environment.
    assert fixed_one == fixed_two == default_one


def test_to_float_gives_channels_last_in_unit_range():
    batch = torch.randint(0, 256, (2, 5, 6, 3), dtype=torch.uint8)
    x = to_float(batch)
    assert x.shape == (2, 3, 5, 6) and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(x[1, 2, 4, 5], batch[1, 4, 5, 2].float() / 255)


def test_augmentation_with_nothing_enabled_is_the_identity_and_shift_moves_pixels():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 2:6, 2:6] = 1.0
    none = replace(CFG.train.augment, rotate=0.0, translate=0.0, scale=0.0, flip=False)
    torch.testing.assert_close(random_affine(x, none, torch.Generator().manual_seed(0)), x)
    shifted = random_affine(x, replace(none, translate=0.25), torch.Generator().manual_seed(0))
    assert not torch.allclose(shifted, x)
    assert shifted.sum().item() == pytest.approx(x.sum().item(), rel=0.3)


def test_crop_zooms_in_and_lighting_changes_brightness_within_range():
    x = torch.rand(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    none = replace(CFG.train.augment, rotate=0.0, translate=0.0, scale=0.0, flip=False)
    assert is_identity(none)
    torch.testing.assert_close(augment(x, none, torch.Generator()), x)
    checker = torch.zeros(1, 1, 32, 32)
    checker[..., ::2, :] = 1.0  # stripes one pixel apart: a zoom-in spreads them
    cropped = augment(checker, replace(none, crop=0.2), torch.Generator().manual_seed(0))
    assert cropped.shape == checker.shape and not torch.allclose(cropped, checker)
    brighter = augment(x, replace(none, brightness=0.3), torch.Generator().manual_seed(0))
    shifts = (brighter - x).mean(dim=(1, 2, 3))
    assert shifts.abs().max() <= 0.3 + 1e-6 and shifts.std() > 0.01  # per image
    contrast = augment(x, replace(none, contrast=0.5), torch.Generator().manual_seed(0))
    assert contrast.min() >= 0 and contrast.max() <= 1
    ratios = contrast.std(dim=(1, 2, 3)) / x.std(dim=(1, 2, 3))
    assert ratios.min() < 0.95 and ratios.max() > 1.05


def test_a_share_of_a_batch_is_augmented_exactly_as_within_the_whole_batch():
    x = torch.rand(12, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    every = replace(CFG.train.augment, flip=True, crop=0.5, brightness=0.2, contrast=0.2)
    whole_gen, share_gen = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    whole = augment(x, every, whole_gen)
    share = augment(x[4:8], every, share_gen, BatchShare(4, 12))
    assert torch.equal(share, whole[4:8])
    assert torch.equal(share_gen.get_state(), whole_gen.get_state())  # the same draws
    other = augment(x[4:8], every, torch.Generator().manual_seed(3))  # drawn as a batch of 4
    assert not torch.equal(other, whole[4:8])


def test_training_settings_are_checked_before_training(digits_paths: Paths):
    data = Batches.from_numpy(np.zeros((4, 8, 8, 1), np.uint8), np.zeros(4), torch.device("cpu"))
    model = build_model(ModelSpec("small_cnn", ["a", "b"], 1, 8, [0.0], [1.0], [4], 0.0))
    norm = Normalizer.create([0.0], [1.0], torch.device("cpu"))
    with pytest.raises(StagewiseError, match=r"train\.epochs"):
        fit(model, data, data, replace(CFG.train, epochs=0), norm, 0)


def test_cuda_requested_without_a_gpu_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(StagewiseError, match="no CUDA GPU"):
        select_device("cuda")
    assert select_device("auto").type == "cpu"
