"""The served model (a real `mlflow models serve` process, started once for the module) takes
encoded image files and raw pixels over HTTP, and never answers a wrong request with a 200."""

import base64
import io
import json

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.core.paths import PROJECT_ROOT, ModelFiles
from pipeline.model.inference import Classifier
from pipeline.model.networks import ModelSpec
from pipeline.model.predict import predict_files
from tests.serving import images_request, packaged_small_cnn, post, served

SPEC = ModelSpec("small_cnn", ["cat", "dog"], 3, 16, [0.5, 0.4, 0.3], [0.25, 0.3, 0.2], widths=[4])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("served")
    model = packaged_small_cnn(folder, SPEC)
    with served(str(model), folder) as url:
        yield url, Classifier.load(ModelFiles(folder / "weights"))


def jpeg(seed: int, size: tuple[int, int] = (20, 12)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def answer(url: str, body: dict) -> pd.DataFrame:
    status, response = post(url, body)
    assert status == 200, response[:500]
    return pd.DataFrame(json.loads(response)["predictions"])


def test_jpeg_files_in_every_json_format_match_the_classifier(server):
    url, classifier = server
    files = [jpeg(1), jpeg(2, (9, 31))]
    expected = predict_files(classifier, files, 10**6, 8)
    encoded = [base64.b64encode(f).decode() for f in files]
    for body in (
        images_request(files),
        {"dataframe_records": [{"image": e} for e in encoded]},
        {"inputs": {"image": encoded}},
    ):
        got = answer(url, body)
        assert got["label"].tolist() == expected["label"].tolist()
        np.testing.assert_allclose(got[["p_cat", "p_dog"]], expected[["p_cat", "p_dog"]], atol=1e-5)
        assert got["error"].tolist() == ["", ""]


def test_raw_pixels_of_any_size_match_the_classifier(server):
    url, classifier = server
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (16, 16, 3)), rng.integers(0, 256, (5, 9))]
    got = answer(
        url, {"dataframe_split": {"columns": ["pixels"], "data": [[i.tolist()] for i in images]}}
    )
    np.testing.assert_allclose(got[["p_cat", "p_dog"]], classifier.predict_proba(images), atol=1e-5)


def test_an_unreadable_file_gets_an_error_and_no_label_beside_the_good_ones(server):
    url, _ = server
    got = answer(url, images_request([jpeg(1), b"not an image", jpeg(1)[:200]]))
    assert got["label"].notna().tolist() == [True, False, False]
    assert got["error"][1].startswith("not an image") and got["error"][2].startswith("unreadable")


PIXELS = np.random.default_rng(0).integers(0, 256, (6, 5, 3))


def pixels_request(*images) -> dict:
    return {
        "dataframe_split": {
            "columns": ["pixels"],
            "data": [[i.tolist() if isinstance(i, np.ndarray) else i] for i in images],
        }
    }


@pytest.mark.parametrize(
    "body, reason",
    [
        (pixels_request(PIXELS / 255), "got fractions (images scaled to 0..1?"),
        (pixels_request(PIXELS // 2 + 0.5), "got fractions"),
        (pixels_request(PIXELS + 300), "integers 0..255; got values from 300 to 555"),
        (
            pixels_request([1, 2, 3]),
            "must be H x W or H x W x C with C = 1, 3 or 4; got shape (3,)",
        ),
        (
            pixels_request(np.zeros((4, 4, 2))),
            "H x W or H x W x C with C = 1, 3 or 4; got shape (4, 4, 2)",
        ),
        (pixels_request([[1, 2], [3]]), "rows of different lengths"),
        ({"dataframe_records": [{"picture": "x"}]}, "send a column `image`"),
        ({"inputs": PIXELS[None].tolist()}, ""),  # the tensor format of earlier versions
    ],
)
def test_a_wrong_request_is_a_4xx_naming_the_problem_without_a_trace(server, body, reason):
    url, _ = server
    status, response = post(url, body)
    assert 400 <= status < 500
    message = json.loads(response)["message"]
    assert reason in message
    # MLflow prefixes a preview of the parsed data; ours is the message's last line.
    assert "\n" not in message.rsplit("Error: ", 1)[-1]
    text = response.decode()
    assert "stack_trace" not in text and "Traceback" not in text
    assert str(PROJECT_ROOT) not in text and "site-packages" not in text


def test_stages_serve_answers_like_mlflow_serve_and_refuses_a_large_body_at_once(tmp_path):
    """`python -m stages.serve`: MLflow's scoring app with a body limit (413 before reading)."""
    import time
    from functools import partial

    from tests.serving import stage_serve

    model = packaged_small_cnn(tmp_path, SPEC)
    classifier = Classifier.load(ModelFiles(tmp_path / "weights"))
    with served(str(model), PROJECT_ROOT, command=partial(stage_serve, max_request_mb=0.05)) as url:
        files = [jpeg(3), jpeg(4)]
        got = answer(url, images_request(files))
        assert got["label"].tolist() == predict_files(classifier, files, 10**6, 8)["label"].tolist()
        start = time.monotonic()
        status, body = post(url, b"x" * 200_000)  # ~0.2 MB > 0.05 MB
        assert (status, body) == (413, b"Content Too Large")
        assert time.monotonic() - start < 5
