"""normalize-stats: mean/std over the train split only, streamed in chunks."""

import json

import numpy as np

from pipeline.core.paths import Paths
from pipeline.data.split import load_split_images
from pipeline.data.stats import channel_stats


def test_stats_are_those_of_the_train_split_only(digits_paths: Paths):
    stats = json.loads(digits_paths.normalize.read_text())
    train = load_split_images(digits_paths, "train").images / 255.0
    np.testing.assert_allclose(stats["mean"], train.mean(axis=(0, 1, 2)), rtol=1e-10)
    np.testing.assert_allclose(stats["std"], train.std(axis=(0, 1, 2)), rtol=1e-10)
    assert stats["images"] == len(train)
    everything = load_split_images(digits_paths, "valid").images / 255.0
    assert not np.isclose(stats["mean"][0], everything.mean())


def test_chunking_does_not_change_the_result():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(50, 4, 5, 3), dtype=np.uint8)
    indices = rng.permutation(50)[:37]
    whole = channel_stats(images, indices, chunk=1000)
    chunked = channel_stats(images, indices, chunk=7)
    np.testing.assert_allclose(whole["mean"], chunked["mean"])
    np.testing.assert_allclose(whole["std"], chunked["std"])
    np.testing.assert_allclose(whole["mean"], images[indices].mean(axis=(0, 1, 2)) / 255)
