"""Nothing but test-holdout reads the test split: proved by guarding the test rows."""

import numpy as np
import pytest

from pipeline.core.paths import Paths
from pipeline.data import split as split_module
from pipeline.data import store
from pipeline.data.split import load_split_table, split_indices
from stages import evaluate, ingest, normalize_stats, split, test_holdout, train
from tests.conftest import compose_config


class GuardedImages:
    """The array store, except that touching any test row fails the test."""

    def __init__(self, images: np.ndarray, forbidden: set[int]):
        self.images, self.forbidden = images, forbidden
        self.shape, self.dtype = images.shape, images.dtype

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key):
        rows = np.arange(len(self.images))[key[0] if isinstance(key, tuple) else key]
        if self.forbidden & set(np.atleast_1d(rows).tolist()):
            raise AssertionError("a test-split image was read")
        return self.images[key]


def test_only_test_holdout_touches_test_images(tmp_path, monkeypatch):
    paths = Paths(tmp_path)
    cfg = compose_config("train.epochs=1", "model.widths=[8,16]")
    ingest.run(cfg, paths)
    split.run(cfg, paths)
    test_rows = set(
        split_indices(
            store.load_manifest(paths.manifest), load_split_table(paths.split), "test"
        ).tolist()
    )
    real = store.load_images

    def guarded(path):
        return GuardedImages(real(path), test_rows)

    monkeypatch.setattr(split_module, "load_images", guarded)
    monkeypatch.setattr(normalize_stats, "load_images", guarded)
    normalize_stats.run(cfg, paths)
    train.run(cfg, paths)
    evaluate.run(cfg, paths)
    with pytest.raises(AssertionError, match="a test-split image was read"):
        test_holdout.run(cfg, paths)
