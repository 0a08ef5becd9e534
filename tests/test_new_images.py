"""A model fits new images exactly as ingest fitted its training images, whichever way they
come: a file path, encoded bytes or raw pixels, to Classifier or to the packaged MLflow model."""

import re

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.core.config import Resize
from pipeline.core.errors import StagewiseError
from pipeline.core.paths import ModelFiles
from pipeline.data.decode import decode_bytes, encode_png, fit_pixels
from pipeline.model.inference import Classifier
from pipeline.model.networks import ModelSpec, build_model, save_model
from pipeline.model.predict import predict_files

BACKGROUND = [10, 200, 30]  # padding colour: pad must show it, squish and crop must not


def structured_image(height: int = 13, width: int = 7) -> np.ndarray:
    """A non-square RGB image whose rows, columns and channels all differ."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([y * 255 // (height - 1), x * 255 // (width - 1), (x * y * 37) % 256], -1)
    image[:4, :3] = (250, 250, 250)  # a bright corner block: crop and squish move it
    return image.astype(np.uint8)


def saved_model(folder, resize: str) -> ModelFiles:
    torch.manual_seed(0)
    spec = ModelSpec(
        "small_cnn", ["a", "b", "c"], 3, 8, [0.5, 0.4, 0.3], [0.25, 0.3, 0.2], widths=[4],
        resize=resize, background=BACKGROUND,
    )  # fmt: skip
    files = ModelFiles(folder / resize)
    save_model(files, build_model(spec), spec)
    return files


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, ModelFiles]:
    folder = tmp_path_factory.mktemp("models")
    return {resize: saved_model(folder, resize) for resize in Resize}


@pytest.fixture(scope="module")
def packaged(models, tmp_path_factory) -> dict:
    """Each model saved as the MLflow model training logs, and loaded back as pyfunc."""
    import mlflow

    from pipeline.tracking.models import save_packaged_model

    folder = tmp_path_factory.mktemp("packaged")
    loaded = {}
    for resize, files in models.items():
        example = [encode_png(structured_image())]
        output = predict_files(Classifier.load(files), example, 10**6, 8)
        save_packaged_model(files, folder / resize, example, output)
        loaded[resize] = mlflow.pyfunc.load_model(str(folder / resize))
    return loaded


def probabilities(frame: pd.DataFrame) -> np.ndarray:
    return frame[[c for c in frame.columns if c.startswith("p_")]].to_numpy(dtype=float)


@pytest.mark.parametrize("resize", list(Resize))
def test_pixels_are_fitted_like_the_same_image_as_a_file(models, resize):
    image = structured_image()
    settings = ModelSpec("small_cnn", ["a"], 3, 8, [0], [1], resize=resize, background=BACKGROUND)
    fitted = fit_pixels([image], settings.decode_settings())[0]
    np.testing.assert_array_equal(
        fitted, decode_bytes(encode_png(image), settings.decode_settings()).array
    )
    if resize == "pad":  # 13 high, 7 wide: padded left and right with the background
        assert tuple(fitted[4, 0]) == tuple(BACKGROUND)


@pytest.mark.parametrize("resize", list(Resize))
def test_path_bytes_and_pixels_get_the_same_probabilities(models, packaged, resize, tmp_path):
    image = structured_image()
    path = tmp_path / "image.png"
    path.write_bytes(encode_png(image))
    classifier = Classifier.load(models[resize])
    expected = classifier.predict_proba(image[None])[0]
    model = packaged[resize]
    answers = {
        "classifier, path": predict_files(classifier, [path], 10**6, 8),
        "classifier, bytes": predict_files(classifier, [path.read_bytes()], 10**6, 8),
        "classifier, list of pixels": classifier.predict_frame([image]),
        "pyfunc, image column": model.predict(pd.DataFrame({"image": [path.read_bytes()]})),
        "pyfunc, pixels column": model.predict(pd.DataFrame({"pixels": [image.tolist()]})),
        "unwrapped, path": model.unwrap_python_model().predict(None, [str(path)]),
        "unwrapped, array": model.unwrap_python_model().predict(None, image[None]),
    }
    for way, answer in answers.items():
        np.testing.assert_allclose(probabilities(answer)[0], expected, atol=1e-5, err_msg=way)


def test_the_resize_method_is_honoured(models):
    image = structured_image()
    proba = {r: Classifier.load(f).predict_proba(image[None])[0] for r, f in models.items()}
    assert not np.allclose(proba["squish"], proba["crop"], atol=1e-4)
    assert not np.allclose(proba["squish"], proba["pad"], atol=1e-4)


def test_alpha_is_composited_on_the_background_as_in_a_file(models):
    rgba = np.zeros((6, 10, 4), dtype=np.uint8)
    rgba[:3] = (200, 0, 0, 255)  # top half opaque red, bottom half transparent
    settings = Classifier.load(models["squish"]).spec.decode_settings()
    fitted = fit_pixels([rgba], settings)[0]
    np.testing.assert_array_equal(fitted, decode_bytes(encode_png(rgba), settings).array)
    assert tuple(fitted[-1, 0]) == tuple(BACKGROUND)


@pytest.mark.parametrize(
    "values, message",
    [
        (np.full((1, 8, 8, 3), 0.5), "fractions"),  # scaled to 0..1
        (np.full((1, 8, 8, 3), 1.0), None),  # integer-valued floats are pixels
        (np.full((1, 8, 8, 3), 300), "from 300 to 300"),
        (np.full((1, 8, 8, 3), -1.0), "from -1.0 to -1.0"),
        (np.full((1, 8, 8, 3), np.nan), "integers 0..255"),
        (np.array([[["a"]]]), "got <U1 values"),
    ],
)
def test_only_integer_pixels_0_to_255_are_accepted(models, values, message):
    classifier = Classifier.load(models["squish"])
    if message is None:
        np.testing.assert_allclose(
            classifier.predict_proba(values), classifier.predict_proba(values.astype(np.uint8))
        )
        return
    with pytest.raises(StagewiseError, match=message):
        classifier.predict_proba(values)
    with pytest.raises(StagewiseError, match=message):
        classifier.predict_proba(list(values))  # one image at a time, as the served model


@pytest.mark.parametrize(
    "images, shape",
    [
        (np.zeros((2, 8, 8, 2), np.uint8), r"\(8, 8, 2\)"),
        (np.zeros((1, 2, 8, 8, 3), np.uint8), r"\(1, 2, 8, 8, 3\)"),
        (np.zeros((8,), np.uint8), r"\(8,\)"),
        ([np.zeros((4, 4, 5), np.uint8)], r"\(4, 4, 5\)"),
        ([[[1, 2], [3]]], "rows of different lengths"),
    ],
)
def test_a_wrong_shape_says_which_shapes_are_expected(models, images, shape):
    with pytest.raises(StagewiseError, match="H x W or H x W x C") as error:
        Classifier.load(models["squish"]).predict_proba(images)
    assert len(str(error.value).splitlines()) == 1
    assert re.search(shape, str(error.value))
