"""A real `mlflow models serve` process for a saved model, and requests to it (tests and
benchmarks/serve_throughput.py share it)."""

import base64
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

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


def stage_serve(model_uri: str, port: int, max_request_mb: float = 16) -> list[str]:
    return [sys.executable, "-m", "stages.serve", f"serve.model={model_uri}",
            f"serve.port={port}", f"serve.max_request_mb={max_request_mb}"]  # fmt: skip


@contextmanager
def served(
    model_uri: str, cwd: Path, env: dict[str, str] | None = None, command=mlflow_serve
) -> Iterator[str]:
    """A server (`mlflow models serve`, or command(model_uri, port)) of model_uri on a free
    local port, until the block ends; yields its base URL once /ping answers."""
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
        yield url
    finally:
        os.killpg(server.pid, 15)  # its own session: uvicorn's worker goes too
        server.wait(timeout=30)


def post(url: str, body: bytes | dict, timeout: float = 60) -> tuple[int, bytes]:
    """POST body (JSON, or a dict to send as JSON) to /invocations: (status, response body)."""
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(
        f"{url}/invocations", data, {"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def images_request(files: list[bytes]) -> dict:
    """The JSON body for encoded image files, as `curl` sends them (README)."""
    encoded = [base64.b64encode(f).decode() for f in files]
    return {"dataframe_split": {"columns": ["image"], "data": [[e] for e in encoded]}}
