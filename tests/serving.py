"""A real `mlflow models serve` process for a saved model, and requests to it (tests and
benchmarks/serve_throughput.py share it)."""

import base64
import contextlib
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.core.paths import ModelFiles
from pipeline.data.decode import encode_png
from pipeline.model.inference import Classifier
from pipeline.model.networks import ModelSpec, build_model, save_model
from pipeline.model.predict import predict_files


def packaged_small_cnn(folder: Path, spec: ModelSpec, seed: int = 0) -> Path:
    """A small CNN (untrained: serving needs a model, not a good one) saved as the MLflow
    model training logs; returns the MLflow model's folder."""
    from pipeline.tracking.models import save_packaged_model

    torch.manual_seed(seed)
    files = ModelFiles(folder / "weights")
    save_model(files, build_model(spec), spec)
    rng = np.random.default_rng(seed)
    shape = (spec.image_size, spec.image_size, spec.channels)
    example = [encode_png(rng.integers(0, 256, shape, dtype=np.uint8)) for _ in range(2)]
    output = predict_files(Classifier.load(files), example, 10**6, 8)
    save_packaged_model(files, folder / "mlflow_model", example, output)
    return folder / "mlflow_model"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mlflow_serve(model_uri: str, port: int) -> list[str]:
    return ["mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
            "-h", "127.0.0.1", "-p", str(port)]  # fmt: skip


def stage_serve(model_uri: str, port: int, **settings: object) -> list[str]:
    """`python -m stages.serve` with serve.<key>=<value> for each of settings."""
    return [sys.executable, "-m", "stages.serve", f"serve.model={model_uri}",
            f"serve.port={port}", *(f"serve.{k}={v}" for k, v in settings.items())]  # fmt: skip


@contextmanager
def served(
    model_uri: str, cwd: Path, env: dict[str, str] | None = None, command=mlflow_serve
) -> Iterator[str]:
    """A server (`mlflow models serve`, or command(model_uri, port)) of model_uri on a free
    local port, until the block ends; yields its base URL once /ping answers."""
    with served_process(model_uri, cwd, env, command) as (url, _):
        yield url


@contextmanager
def served_process(
    model_uri: str, cwd: Path, env: dict[str, str] | None = None, command=mlflow_serve
) -> Iterator[tuple[str, subprocess.Popen]]:
    """served(), yielding the server process too (uvicorn answers in that process)."""
    port = free_port()
    env = {**(env or os.environ), "PYTHONWARNINGS": "ignore"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    server = subprocess.Popen(
        command(model_uri, port), cwd=cwd, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/ping", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{command(model_uri, port)} did not start") from None
                time.sleep(0.3)
        yield url, server
    finally:
        os.killpg(server.pid, 15)  # its own session: uvicorn's worker goes too
        server.wait(timeout=30)


def post(
    url: str, body: bytes | dict, timeout: float = 60, content_type: str = "application/json"
) -> tuple[int, bytes]:
    """POST body (JSON, or a dict to send as JSON) to /invocations: (status, response body).
    A server that refuses a large body at once answers and closes while the body is still
    being sent: like curl, this reads that early answer instead of failing on the broken pipe."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        # the server may answer early and close; its answer is still there to be read
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.request("POST", "/invocations", data, {"Content-Type": content_type})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def images_request(files: list[bytes]) -> dict:
    """The JSON body for encoded image files, as `curl` sends them (README)."""
    encoded = [base64.b64encode(f).decode() for f in files]
    return {"dataframe_split": {"columns": ["image"], "data": [[e] for e in encoded]}}


# Hostile files: small encodings of large decoding work (tests/test_serving.py and
# benchmarks/serve_worst_request.py).


def encoded(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data).to_bytes(4, "big")
    return len(data).to_bytes(4, "big") + kind + data + crc


def png_with_chunks(chunks: list[bytes], size: int = 8) -> bytes:
    """A size x size greyscale PNG with the given chunks (png_chunk) before its pixels."""
    png = encoded(Image.new("L", (size, size)), "PNG")
    after_header = 8 + 25  # signature, IHDR
    return png[:after_header] + b"".join(chunks) + png[after_header:]


def inflating_chunk() -> bytes:
    """A 1 KB zTXt chunk that PIL inflates to 1 MiB of text when it opens the file."""
    return png_chunk(b"zTXt", b"k\x00\x00" + zlib.compress(b"\x00" * (2**20 - 1), 9))


def jpeg_with_scans(image: Image.Image, extra_scans: int) -> bytes:
    """image as a progressive JPEG whose first AC scan (a few dozen bytes for a flat image)
    is repeated extra_scans times: libjpeg makes a pass over every block for each."""
    jpeg = encoded(image, "JPEG", progressive=True, quality=90)
    second = jpeg.index(b"\xff\xda", jpeg.index(b"\xff\xda") + 2)
    end = min(i for m in (b"\xff\xc4", b"\xff\xda") if (i := jpeg.find(m, second + 2)) > 0)
    return jpeg[:end] + jpeg[second:end] * extra_scans + jpeg[end:]
