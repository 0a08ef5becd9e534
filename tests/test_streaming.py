"""Streamed splits (read per batch from the memory-mapped array store) train exactly as
in-memory ones do."""

import pickle

import numpy as np
import pytest
import torch

from pipeline.core.config import DataLoading
from pipeline.core.errors import StagewiseError
from pipeline.core.paths import Paths
from pipeline.data.split import load_split_images, load_split_rows
from pipeline.model.device import Batches
from pipeline.model.streaming import (
    StoreRows,
    StreamedBatches,
    keep_in_memory,
    split_data,
)
from pipeline.train.learner import create_learner
from pipeline.train.loop import fit
from tests.conftest import compose_config


def no_fetch(run_id, folder):
    raise AssertionError("no run model is fetched")


def train_two_epochs(paths: Paths, *overrides: str):
    cfg = compose_config("train.epochs=2", *overrides)
    learner = create_learner(cfg, paths, no_fetch)
    state = fit(
        learner.model, learner.train, learner.valid, cfg.train, learner.normalizer, cfg.seed
    )
    return learner, state


def test_streamed_training_gives_the_same_weights_as_in_memory(digits_paths: Paths):
    memory, memory_state = train_two_epochs(digits_paths, "train.data_loading=memory")
    streamed, streamed_state = train_two_epochs(
        digits_paths, "train.data_loading=stream", "train.loader_workers=2"
    )
    assert isinstance(memory.train, Batches)
    assert isinstance(streamed.train, StreamedBatches)
    assert isinstance(streamed.valid, StreamedBatches)
    assert torch.equal(streamed.example, memory.example)
    for (name, a), (_, b) in zip(
        memory.model.state_dict().items(), streamed.model.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert memory_state.history[-1].valid_loss == streamed_state.history[-1].valid_loss
    assert memory_state.history[-1].train_loss == streamed_state.history[-1].train_loss


def test_streamed_batches_follow_the_given_order_with_and_without_workers(digits_paths: Paths):
    in_memory = load_split_images(digits_paths, "valid")
    rows = load_split_rows(digits_paths, "valid")
    order = torch.randperm(len(rows.rows), generator=torch.Generator().manual_seed(1))
    batches = list(order[:50].split(16))  # the last batch is short
    for workers in (0, 1):
        data = split_data(rows, torch.device("cpu"), in_memory=False, workers=workers)
        served = list(data.iterate(batches))
        assert [len(t) for _, t in served] == [16, 16, 16, 2]
        for idx, (images, targets) in zip(batches, served, strict=True):
            assert torch.equal(images, torch.from_numpy(in_memory.images[idx.numpy()]))
            assert torch.equal(targets, torch.from_numpy(in_memory.targets[idx.numpy()]))


def test_store_rows_send_workers_the_path_and_rows_not_the_images(digits_paths: Paths):
    rows = load_split_rows(digits_paths, "train")
    store = StoreRows(rows.store, rows.rows)
    first = store[0:4]  # opens the memory map in this process
    copy = pickle.loads(pickle.dumps(store))
    assert copy._images is None
    assert len(pickle.dumps(store)) < rows.rows.nbytes + 1000
    assert torch.equal(copy[0:4], first)
    assert store.shape == (len(rows.rows), *rows.image_shape)


def test_auto_streams_only_splits_larger_than_the_memory_share():
    assert keep_in_memory(DataLoading.auto, 1 << 20)
    assert not keep_in_memory(DataLoading.auto, 1 << 60)
    assert keep_in_memory(DataLoading.memory, 1 << 60)
    assert not keep_in_memory(DataLoading.stream, 1)


def test_negative_loader_workers_is_a_clear_error(digits_paths: Paths):
    rows = load_split_rows(digits_paths, "valid")
    with pytest.raises(StagewiseError, match=r"train\.loader_workers=-1"):
        split_data(rows, torch.device("cpu"), in_memory=False, workers=-1)


def test_split_rows_count_the_bytes_the_images_take_in_memory(digits_paths: Paths):
    rows = load_split_rows(digits_paths, "train")
    assert rows.nbytes == rows.read().nbytes == np.asarray(rows.read()).size
