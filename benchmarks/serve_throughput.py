"""Images/s of the served model: requests of 1, 32 and 256 64x64 JPEG files against a real
`mlflow models serve --env-manager local` server on this machine (CPU), with raw pixel
lists (the `pixels` column) beside them for comparison.

The model is the default small_cnn (widths 32, 64, 128) for 64x64 RGB images, with untrained
weights: the cost of an answer does not depend on the weights' values. Each request size is
sent repeatedly after a warm-up; the median request time gives images/s, measured end to end
by the client (JSON encoding, HTTP, base64 and JPEG decoding, fitting, the forward pass).

    python benchmarks/serve_throughput.py [--seconds 2]   (under a minute)
"""

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.model.networks import ModelSpec  # noqa: E402
from tests.serving import images_request, packaged_small_cnn, post, served  # noqa: E402

SIZE = 64
BATCHES = (1, 32, 256)


def photo_like_jpeg(seed: int) -> bytes:
    """Smooth colour gradients plus noise: a JPEG of a realistic size (~2-3 KB at 64x64)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    base = rng.uniform(0, 255, 3) + (x[..., None] * rng.uniform(-2, 2, 3)) + y[..., None]
    pixels = np.clip(base + rng.normal(0, 12, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def pixels_request(files: list[bytes]) -> dict:
    rows = [[np.asarray(Image.open(io.BytesIO(f))).tolist()] for f in files]
    return {"dataframe_split": {"columns": ["pixels"], "data": rows}}


def timed(url: str, body: bytes, seconds: float) -> tuple[float, int]:
    """Median seconds per request over at least 3 requests / the given time; and how many."""
    times: list[float] = []
    deadline = time.perf_counter() + seconds
    while len(times) < 3 or time.perf_counter() < deadline:
        start = time.perf_counter()
        status, response = post(url, body)
        times.append(time.perf_counter() - start)
        if status != 200:
            raise SystemExit(f"request failed ({status}): {response[:300]!r}")
    return statistics.median(times), len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0, help="time per measured case")
    args = parser.parse_args()
    spec = ModelSpec(
        "small_cnn", [f"c{i}" for i in range(10)], 3, SIZE, [0.5] * 3, [0.25] * 3,
        widths=[32, 64, 128],
    )  # fmt: skip
    files = [photo_like_jpeg(i) for i in range(max(BATCHES))]
    print(
        f"{len(files)} JPEGs of {SIZE}x{SIZE}, {np.mean([len(f) for f in files]):.0f} bytes each on average"
    )
    with tempfile.TemporaryDirectory() as scratch:
        started = time.perf_counter()
        model = packaged_small_cnn(Path(scratch), spec)
        with served(str(model), Path(scratch)) as url:
            print(f"model saved and server up in {time.perf_counter() - started:.1f} s")
            post(url, images_request(files[:32]))  # warm-up: first-call costs out of the way
            print(
                f"{'input':<7} {'images':>6} {'request MB':>10} {'requests':>8} {'median s':>9} {'images/s':>9}"
            )
            # 256 images as pixel lists are a 17 MB request that takes ~10 s: left out.
            for kind, request, sizes in (
                ("jpeg", images_request, BATCHES),
                ("pixels", pixels_request, BATCHES[:2]),
            ):
                for n in sizes:
                    body = json.dumps(request(files[:n])).encode()
                    seconds, count = timed(url, body, args.seconds)
                    print(
                        f"{kind:<7} {n:>6} {len(body) / 1e6:>10.3f} {count:>8} {seconds:>9.4f} {n / seconds:>9.0f}"
                    )


if __name__ == "__main__":
    main()
