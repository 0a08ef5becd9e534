"""The classifier used by evaluate, test-holdout and the packaged model takes raw images."""

import numpy as np
import pytest
import torch

from pipeline.core.errors import StagewiseError
from pipeline.model.inference import Classifier
from pipeline.model.networks import ModelSpec, build_model


@pytest.fixture
def classifier() -> Classifier:
    torch.manual_seed(0)
    spec = ModelSpec("small_cnn", ["a", "b"], 1, 8, [0.3], [0.4], widths=[4], dropout=0.0)
    return Classifier(build_model(spec).eval(), spec, torch.device("cpu"))


def test_images_with_and_without_channel_axis_agree(classifier):
    images = np.random.default_rng(0).integers(0, 256, (3, 8, 8), dtype=np.uint8)
    np.testing.assert_allclose(
        classifier.predict_proba(images), classifier.predict_proba(images[..., None])
    )


def test_rgb_and_larger_images_are_converted(classifier):
    rgb = np.full((2, 16, 16, 3), 200, dtype=np.uint8)
    batch = classifier.as_batch(rgb)
    assert batch.shape == (2, 8, 8, 1) and batch.dtype == torch.uint8
    assert (batch == 200).all()


def test_frame_has_label_probability_and_one_column_per_class(classifier):
    frame = classifier.predict_frame(np.zeros((2, 8, 8), dtype=np.uint8))
    assert list(frame.columns) == ["label", "probability", "p_a", "p_b"]
    np.testing.assert_allclose(frame[["p_a", "p_b"]].sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize(
    "bad", [np.zeros((8, 8)), np.full((1, 8, 8), 300.0), np.zeros((1, 8, 8, 2))]
)
def test_malformed_input_is_a_clear_error(classifier, bad):
    with pytest.raises(StagewiseError, match="must be"):
        classifier.predict_proba(bad)


def test_grey_to_rgb_and_back(classifier):
    grey = np.random.default_rng(2).integers(0, 256, (2, 8, 8, 1), dtype=np.uint8)
    rgb = np.repeat(grey, 3, axis=-1)
    assert np.array_equal(classifier.as_batch(rgb).numpy(), grey)  # luma of grey is grey


def test_test_time_augmentation_blends_augmented_passes_with_the_plain_prediction(classifier):
    from dataclasses import replace

    from pipeline.model.inference import TTA
    from tests.conftest import compose_config

    images = np.random.default_rng(1).integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
    augment = compose_config().train.augment
    plain = classifier.predict_proba(images)
    with_tta = classifier.predict_proba(images, tta=TTA(augment, n=3))
    assert with_tta.shape == plain.shape and np.allclose(with_tta.sum(axis=1), 1, atol=1e-5)
    assert not np.allclose(with_tta, plain)
    np.testing.assert_array_equal(with_tta, classifier.predict_proba(images, tta=TTA(augment, 3)))
    still = replace(
        augment, rotate=0.0, translate=0.0, scale=0.0
    )  # augmentation that changes nothing
    np.testing.assert_allclose(
        classifier.predict_proba(images, tta=TTA(still, 2)), plain, atol=1e-6
    )
    np.testing.assert_array_equal(classifier.predict_proba(images, tta=TTA(augment, 0)), plain)
