"""The served model (a real `mlflow models serve` process, started once for the module) takes
encoded image files and raw pixels over HTTP, and never answers a wrong request with a 200;
`python -m stages.serve` (a second server) bounds what one request may cost and shows no
stack trace, whatever the body."""

import base64
import io
import json
import os
import subprocess
import sys
import time
from functools import partial

import numpy as np
import pandas as pd
import psutil
import pytest
from PIL import Image

from pipeline.core.errors import StagewiseError
from pipeline.core.paths import PROJECT_ROOT, ModelFiles
from pipeline.model.inference import Classifier
from pipeline.model.networks import ModelSpec
from pipeline.model.predict import predict_files
from tests.conftest import compose_config
from tests.images import hostile_files
from tests.serving import (
    encoded,
    images_request,
    jpeg_with_scans,
    packaged_small_cnn,
    png_chunk,
    png_with_chunks,
    post,
    served,
    served_process,
    stage_serve,
)

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


def strict_json(text: bytes) -> object:
    """JSON as the standard has it: NaN and Infinity are not JSON."""

    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def answer(url: str, body: dict) -> pd.DataFrame:
    status, response = post(url, body)
    assert status == 200, response[:500]
    return pd.DataFrame(strict_json(response)["predictions"])


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


def test_an_unreadable_file_gets_an_error_and_null_not_nan_beside_the_good_ones(server):
    url, _ = server
    _, response = post(url, images_request([jpeg(1), b"not an image", jpeg(1)[:200]]))
    rows = strict_json(response)["predictions"]  # NaN once made this answer invalid JSON
    assert [r["label"] is None for r in rows] == [False, True, True]
    assert [r["probability"] is None and r["p_cat"] is None for r in rows] == [False, True, True]
    assert rows[1]["error"].startswith("not an image") and rows[2]["error"].startswith("unreadable")


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
        # MLflow drops the columns the signature lacks: the message says what to send
        ({"dataframe_records": [{"picture": "x"}]}, "send a column `image`"),
        ({"dataframe_records": [{"picture": "x"}]}, "this request has neither"),
        (
            {"dataframe_records": [{"image": "aGk=", "pixels": [[1, 2]]}]},
            "got both columns `image` and `pixels`; send each request's images in one of them",
        ),
        ({"inputs": PIXELS[None].tolist()}, ""),  # the tensor format of earlier versions
    ],
)
def test_a_wrong_request_is_a_4xx_naming_the_problem_without_a_trace(server, body, reason):
    url, _ = server
    status, response = post(url, body)
    assert 400 <= status < 500
    message = strict_json(response)["message"]
    assert reason in message
    # MLflow prefixes a preview of the parsed data; ours is the message's last line.
    assert "\n" not in message.rsplit("Error: ", 1)[-1]
    text = response.decode()
    assert "stack_trace" not in text and "Traceback" not in text
    assert str(PROJECT_ROOT) not in text and "site-packages" not in text


# `python -m stages.serve`: MLflow's scoring app behind pipeline/model/serving.py's guard, with
# small limits, so that each can be reached with small requests.
LIMITS = {"max_request_mb": 1, "max_rows": 16, "max_request_megapixels": 4,
          "max_image_megapixels": 2, "max_json_values": 5000}  # fmt: skip


@pytest.fixture(scope="module")
def stage_server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("stage_served")
    model = packaged_small_cnn(folder, SPEC)
    with served(str(model), PROJECT_ROOT, command=partial(stage_serve, **LIMITS)) as url:
        yield url, Classifier.load(ModelFiles(folder / "weights"))


def timed_post(url: str, body: bytes | dict, **options) -> tuple[int, bytes, float]:
    start = time.monotonic()
    status, response = post(url, body, **options)
    return status, response, time.monotonic() - start


def one_bit_png(side: int) -> bytes:
    """side x side pixels in a few KB: 7000 x 7000 is 6 KB."""
    return encoded(Image.new("1", (side, side)), "PNG", optimize=True)


def assert_no_trace(response: bytes) -> None:
    text = response.decode(errors="replace")
    assert "stack_trace" not in text and "Traceback" not in text
    assert str(PROJECT_ROOT) not in text and "site-packages" not in text


def test_stages_serve_answers_like_mlflow_serve_and_refuses_a_large_body_at_once(stage_server):
    url, classifier = stage_server
    files = [jpeg(3), jpeg(4)]
    got = answer(url, images_request(files))
    assert got["label"].tolist() == predict_files(classifier, files, 10**6, 8)["label"].tolist()
    status, body, seconds = timed_post(url, b"x" * 1_200_000)  # > 1 MB
    assert (status, body) == (413, b"Content Too Large")
    assert seconds < 5


def parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, compression="zstd")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "body, content_type",
    [
        # The outside probe's: 763 bytes that MLflow decoded into 1 GB of rows (then a 200)
        (parquet(pd.DataFrame({"image": [b"\0" * 10_000_000] * 100})), "application/vnd.apache.parquet"),
        (b"PAR1 not parquet", "application/vnd.apache.parquet"),
        (b"image\nAAAA\n", "text/csv"),  # any CSV body answered a stack trace
        (b'image\n"unclosed\n', "text/csv"),
        (b"image=AAAA", "application/x-www-form-urlencoded"),
    ],
)  # fmt: skip
def test_a_body_other_than_json_gets_a_415_before_it_is_read(stage_server, body, content_type):
    url, _ = stage_server
    status, response, seconds = timed_post(url, body, content_type=content_type)
    assert status == 415 and seconds < 1
    message = strict_json(response)["message"]
    assert f"application/json only (got {content_type})" in message and "\n" not in message
    assert "`dataframe_split`" in message and "`image`" in message
    assert_no_trace(response)


@pytest.mark.parametrize(
    "body",
    [
        b'{"dataframe_split": {"columns": ["image"], "data": [["',  # cut off
        b'{"dataframe_split": {"columns": ["image"], "data": [[null]]}}',
        b'{"instances": 3}',
        b'{"inputs": {"image": [[1, 2]]}}',
        b"[1, 2]",
        b"\xff\xfe not utf-8",
    ],
)
def test_a_malformed_json_body_is_a_4xx_without_a_trace(stage_server, body):
    url, _ = stage_server
    status, response = post(url, body)
    assert 400 <= status < 500
    assert_no_trace(response)


def test_too_many_rows_or_pixels_are_a_400_before_any_image_is_decoded(stage_server):
    """The probe's requests: rows of a 49-megapixel PNG of 6 KB each (every one under the
    50-megapixel bomb guard) kept the server busy for 84 s; now the rows and the pixels are
    counted from the headers, and the request refused at once."""
    url, _ = stage_server
    status, response, seconds = timed_post(url, images_request([one_bit_png(7000)] * 17))
    assert status == 400 and seconds < 1
    assert "17 rows in one request; this server takes at most serve.max_rows=16" in str(response)
    # 3 x 1.44 megapixels: each under serve.max_image_megapixels=2, together over 4
    status, response, seconds = timed_post(url, images_request([one_bit_png(1200)] * 3))
    assert status == 400 and seconds < 1
    assert "4.3 megapixels of decoding > serve.max_request_megapixels=4" in str(response)
    assert_no_trace(response)


def test_a_body_of_too_many_json_values_is_a_400_before_it_is_parsed(stage_server):
    url, _ = stage_server
    body = {"dataframe_split": {"columns": ["pixels"], "data": [[[[0]] * 5000]]}}
    status, response, seconds = timed_post(url, body)
    assert status == 400 and seconds < 1
    message = strict_json(response)["message"]
    assert message.startswith("the request body holds more than serve.max_json_values=5000")


def test_costly_or_hostile_files_get_an_error_in_their_row_and_the_others_an_answer(
    stage_server,
):
    """Nothing of these is decoded: the row says why. (Before: the bomb was decoded; the JPEG
    of 300 scans cost a pass over its blocks per scan; the PNG of 5000 empty chunks cost PIL a
    Python loop per chunk; PPM is no format training reads.) Files on which PIL raises an
    unusual exception (tests/images.py) get an error in their row too."""
    url, classifier = stage_server
    files = {
        "bomb": one_bit_png(7000),
        "over the image cap": one_bit_png(1500),  # 2.25 megapixels > 2
        "scans": jpeg_with_scans(Image.new("RGB", (64, 64)), 300),
        "chunks": png_with_chunks([png_chunk(b"quAk", b"")] * 5000),
        "ppm": encoded(Image.new("RGB", (8, 8)), "PPM"),
        **hostile_files(),
    }
    good = jpeg(5)
    status, response = post(url, images_request([*files.values(), good]))
    assert status == 200, response[:500]
    rows = strict_json(response)["predictions"]
    errors = dict(zip(files, [r["error"] for r in rows], strict=False))
    assert errors["bomb"].startswith("too large: 49.0 megapixels of decoding > serve.max_image")
    assert errors["over the image cap"].startswith("too large: 2.2 megapixels")
    assert errors["scans"] == "unreadable: a JPEG of 310 scans > 100"
    assert errors["chunks"].startswith("unreadable: more PNG chunks than a 60")
    assert errors["ppm"].startswith("not an image this server reads: send JPEG, PNG")
    assert all(errors.values()) and all(r["label"] is None for r in rows[:-1])
    assert rows[-1]["label"] == predict_files(classifier, [good], 10**6, 8)["label"][0]


def test_an_exception_inside_predict_is_a_one_line_answer_without_a_trace(tmp_path, monkeypatch):
    """The real app in this process (a uvicorn thread), so that predict can be made to fail:
    inside the model (ImageClassifier.predict turns it into one line), and before the model
    (MLflow's own `except Exception` adds a `stack_trace`, which the guard takes out)."""
    import threading

    import uvicorn
    from mlflow.pyfunc import PyFuncModel

    from pipeline.model.request_limits import RequestLimits
    from pipeline.model.serving import scoring_app
    from tests.serving import free_port

    model = packaged_small_cnn(tmp_path, SPEC)
    app = scoring_app(str(model), 2**20, RequestLimits(8, 4, 2, 5000))
    server = uvicorn.Server(uvicorn.Config(app, port=(port := free_port()), log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        while not server.started:
            time.sleep(0.05)

        def fails(*args, **kwargs):
            raise RuntimeError(f"cannot read {PROJECT_ROOT}/secret.bin")

        monkeypatch.setattr(Classifier, "predict_frame", fails)
        status, response = post(url, images_request([jpeg(1)]))
        assert status == 500
        message = strict_json(response)["message"]
        assert message.endswith(
            "Error: the model failed on this request (RuntimeError); the server's log has the details"
        )
        assert_no_trace(response)
        monkeypatch.setattr(PyFuncModel, "predict", fails)
        status, response = post(url, images_request([jpeg(1)]))
        assert status == 400 and "unexpected error while evaluating the model" in str(response)
        assert_no_trace(response)
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_a_request_past_its_timeout_stops_working(tmp_path):
    """MLflow answers a 504 at its timeout, but its worker thread went on decoding to the end
    (the probe's request outlived its 504 by 24 s); now the model stops at the deadline."""
    model = packaged_small_cnn(tmp_path, SPEC)
    env = {**os.environ, "MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT": "1"}
    generous = partial(
        stage_serve, max_rows=400, max_request_megapixels=10_000, max_image_megapixels=16
    )
    with served_process(str(model), PROJECT_ROOT, env, generous) as (url, process):
        server = psutil.Process(process.pid)
        # ~70 ms of decoding each (a 4000 x 4000 PNG): ~20 s of work in all
        status, response, seconds = timed_post(url, images_request([one_bit_png(4000)] * 300))
        assert status == 504 and seconds < 5
        assert "exceeded limit" in strict_json(response)["message"]
        time.sleep(1)  # the step in flight ends
        before = sum(server.cpu_times()[:2])
        time.sleep(2)
        assert sum(server.cpu_times()[:2]) - before < 0.3  # idle: it stopped working


@pytest.mark.parametrize(
    "override, message",
    [
        ("serve.port=99999", "serve.port=99999: must be a TCP port, 1..65535"),
        ("serve.max_request_mb=-1", "serve.max_request_mb=-1.0: must be above 0"),
        ("serve.max_rows=0", "serve.max_rows=0: must be above 0"),
        ("serve.max_request_megapixels=0", "serve.max_request_megapixels=0.0: must be above 0"),
        ("serve.max_json_values=0", "serve.max_json_values=0: must be above 0"),
        ("serve.max_image_megapixels=100", "serve.max_image_megapixels=100.0 is above"),
    ],
)
def test_a_limit_or_port_out_of_range_is_refused_in_one_line(override, message):
    with pytest.raises(StagewiseError) as refused:
        compose_config(override)
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)


def test_stages_serve_refuses_a_bad_port_in_one_line_without_a_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "stages.serve", "serve.port=99999"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert (result.stdout + result.stderr).strip().splitlines()[-1] == (
        "error: serve.port=99999: must be a TCP port, 1..65535"
    )
    assert "Traceback" not in result.stdout + result.stderr
