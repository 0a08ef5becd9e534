"""The costliest requests `python -m stages.serve` accepts under its default limits (conf/serve/
default.yaml), and how fast it refuses those over them: the server process's peak memory above
its idle level and its CPU seconds per request, measured from outside (psutil, RSS sampled
every 2 ms), each case on a fresh server after one small warm-up request.

How the worst requests are built: decoding work per byte is what a hostile client buys, so
each accepted case spends the whole per-request budget (serve.max_request_megapixels, 64) in
as few images as the per-image cap (serve.max_image_megapixels, 13) allows, or all the rows,
with the files that cost most per byte of each kind:
  png-1bit      flat 1-bit PNGs (12.8 MP in 1.6 KB each): most pixels per byte
  png-rgba      flat RGBA PNGs: decoding holds RGBA, RGB and the resized copies
  gif           flat GIFs: palette -> RGBA -> RGB
  png-16bit     flat 16-bit PNGs (weight 2): decoded through float64 arrays
  jpeg-prog     progressive CMYK 4:4:4 JPEGs (weight 1/2) of 100 scans, the most allowed:
                each scan is a pass over all blocks, and all coefficients are kept
  jpeg-base     flat baseline JPEGs of 7000x7000 (weight 1/16; decode.py's own guard stops at
                50 MP), as many as fit in the body
  png-inflate   PNGs of 4 zTXt chunks each that PIL inflates to 1 MiB on opening, as many
                as the budget allows (each chunk counts 0.25 MP)
  png-chunks    a PNG with as many chunks as its size lets through (one per 256 bytes),
                filling the body
  rows          serve.max_rows photo-like 64x64 JPEGs: the network's work
  pixels-int    one row of pixel lists of serve.max_json_values integers
  pixels-float  the same as floats (`1e0`): one Python float per pixel while parsing
  pixels-rows   serve.max_rows rows of pixel lists, serve.max_json_values integers in all
Refused, each should be a 4xx well under a second (except where the body itself is the cost):
  parquet       the probe's zstd Parquet of 100 rows x 10 MB of zeros -> 415
  csv           a text/csv body -> 415
  budget        one image more than png-1bit -> 400 before any decoding
  rows+1        serve.max_rows + 1 tiny images -> 400
  bomb-rows     the probe's 1,000 rows of a 7000x7000 1-bit PNG -> 400 (rows)
  body          a body 1 MB over serve.max_request_mb -> 413 before it is read
  json-rows     `[[]]` rows up to serve.max_json_values (~670,000 rows parsed) -> 400 (rows)
  json-over     a full body of `[[]]` rows (20 million values) -> 400 before parsing
Refused per row (a 200 whose rows carry the error, nothing decoded):
  bomb          a 7000x7000 1-bit PNG (49 MP), and one a pixel row over the cap
  scans         a JPEG of 1000 scans
  chunk-bomb    an 8 MB PNG of 700,000 empty chunks

The model is the default small_cnn (widths 32, 64, 128) for 64x64 RGB images, untrained.

    python benchmarks/serve_worst_request.py [--cases png-1bit rows ...]   (~3 minutes)
"""

import argparse
import http.client
import io
import json
import sys
import tempfile
import threading
import time
from functools import partial
from pathlib import Path

import numpy as np
import psutil
import yaml
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.model.networks import ModelSpec  # noqa: E402
from tests.serving import (  # noqa: E402
    encoded,
    images_request,
    inflating_chunk,
    jpeg_with_scans,
    packaged_small_cnn,
    png_chunk,
    png_with_chunks,
    post,
    served_process,
    stage_serve,
)

SERVE = yaml.safe_load((ROOT / "conf" / "serve" / "default.yaml").read_text())
MAX_ROWS, MAX_BODY = SERVE["max_rows"], int(SERVE["max_request_mb"] * 2**20)
BUDGET, CAP = SERVE["max_request_megapixels"], SERVE["max_image_megapixels"]
MAX_VALUES = SERVE["max_json_values"]
SIZE = 64


def body(files: list[bytes]) -> bytes:
    return json.dumps(images_request(files)).encode()


def photo_like_jpeg(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    base = rng.uniform(0, 255, 3) + x[..., None] * rng.uniform(-2, 2, 3) + y[..., None]
    pixels = np.clip(base + rng.normal(0, 12, (SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    return encoded(Image.fromarray(pixels), "JPEG", quality=90)


def pixel_rows(value: str, rows: int = 1) -> bytes:
    """A dataframe_split body of square `pixels` rows of one value, as many values as
    serve.max_json_values allows."""
    side = int((MAX_VALUES / rows) ** 0.5) - 2  # each value, its comma, each row's brackets
    row = b"[[" + b",".join([b"[" + b",".join([value.encode()] * side) + b"]"] * side) + b"]]"
    return (
        b'{"dataframe_split": {"columns": ["pixels"], "data": [' + b",".join([row] * rows) + b"]}}"
    )


def empty_rows(rows: int) -> bytes:
    """A dataframe_split body of `[[]]` rows: 3 JSON values each."""
    return (
        b'{"dataframe_split": {"columns": ["pixels"], "data": ['
        + b",".join([b"[[]]"] * rows)
        + b"]}}"
    )


def parquet_zeros() -> bytes:
    import pandas as pd

    buffer = io.BytesIO()
    pd.DataFrame({"image": [b"\x00" * 10_000_000] * 100}).to_parquet(buffer, compression="zstd")
    return buffer.getvalue()


def spending(weight: float) -> tuple[int, int]:
    """(side, count): count square images of side x side pixels that spend the request's
    budget, each at most the per-image cap, for files of this decode weight."""
    count = int(np.ceil(BUDGET / CAP))
    return int((BUDGET / count * 1e6 / weight) ** 0.5), count


def cases() -> dict[str, tuple[bytes, str]]:
    """name -> (request body, content type)."""
    side, count = spending(1)
    flat = partial(Image.new, color=0)
    png1 = encoded(Image.new("1", (side, side)), "PNG", optimize=True)
    side16, count16 = spending(2)
    side_prog, count_prog = spending(0.5)
    cmyk = Image.new("CMYK", (side_prog, side_prog), (10, 20, 30, 40))
    prog = jpeg_with_scans(cmyk, 0)
    prog = jpeg_with_scans(cmyk, 100 - prog.count(b"\xff\xda"))
    base = encoded(Image.new("RGB", (7000, 7000), (90, 120, 150)), "JPEG", quality=90)
    inflating = png_with_chunks([inflating_chunk()] * 4)
    # One chunk per 256 bytes is allowed: a file of 256-byte chunks that fills the body
    chunky = png_with_chunks([png_chunk(b"quAk", bytes(244))] * (MAX_BODY * 3 // 4 // 256 - 100))
    over_cap = int((CAP * 1e6) ** 0.5) + 1
    bomb = encoded(Image.new("1", (7000, 7000)), "PNG", optimize=True)
    json_type = "application/json"
    return {
        "png-1bit": (body([png1] * count), json_type),
        "png-rgba": (body([encoded(flat("RGBA", (side, side)), "PNG")] * count), json_type),
        "gif": (body([encoded(flat("P", (side, side)), "GIF")] * count), json_type),
        "png-16bit": (body([encoded(flat("I;16", (side16, side16)), "PNG")] * count16), json_type),
        "jpeg-prog": (body([prog] * count_prog), json_type),
        "jpeg-base": (body([base] * (MAX_BODY * 3 // 4 // len(base) - 1)), json_type),
        "png-inflate": (body([inflating] * int(BUDGET - 1)), json_type),
        "png-chunks": (body([chunky]), json_type),
        "rows": (body([photo_like_jpeg(i) for i in range(MAX_ROWS)]), json_type),
        "pixels-int": (pixel_rows("0"), json_type),
        "pixels-float": (pixel_rows("1e0"), json_type),
        "pixels-rows": (pixel_rows("255", MAX_ROWS), json_type),
        "parquet": (parquet_zeros(), "application/vnd.apache.parquet"),
        "csv": (b"image\n" + b"AAAA\n" * 1000, "text/csv"),
        "budget": (body([png1] * (count + 1)), json_type),
        "rows+1": (body([photo_like_jpeg(0)] * (MAX_ROWS + 1)), json_type),
        "bomb-rows": (body([bomb] * 1000), json_type),
        "body": (b" " * (MAX_BODY + 2**20), json_type),
        "json-rows": (empty_rows(MAX_VALUES // 3 - 10), json_type),
        "json-over": (empty_rows((MAX_BODY - 100) // 5), json_type),
        "bomb": (body([bomb, encoded(Image.new("1", (over_cap, over_cap)), "PNG")]), json_type),
        "scans": (body([jpeg_with_scans(Image.new("RGB", (4000, 4000)), 1000)]), json_type),
        "chunk-bomb": (body([png_with_chunks([png_chunk(b"quAk", b"")] * 700_000)]), json_type),
    }


def headers_only(url: str, length: int) -> tuple[int, bytes]:
    """POST a request's headers, saying its body is length bytes, and read the answer without
    sending the body: a server that reads no body before refusing it answers at once (with
    the body sent, the server closes the connection while the client still writes)."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.putrequest("POST", "/invocations")
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(length))
    connection.endheaders()
    response = connection.getresponse()
    return response.status, response.read()


class Sampler:
    """The process's peak RSS while running, sampled every 2 ms in a thread."""

    def __init__(self, process: psutil.Process) -> None:
        self.process, self.peak, self.running = process, 0, True
        self.thread = threading.Thread(target=self.sample, daemon=True)
        self.thread.start()

    def sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def stop(self) -> int:
        self.running = False
        self.thread.join()
        return self.peak


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def measure(url: str, process: psutil.Process, data: bytes, content_type: str) -> dict:
    post(url, body([photo_like_jpeg(0)]))  # warm-up: first-call costs out of the way
    time.sleep(0.5)
    idle, cpu = process.memory_info().rss, cpu_seconds(process)
    sampler = Sampler(process)
    start = time.perf_counter()
    if len(data) > MAX_BODY:
        status, answer = headers_only(url, len(data))
    else:
        status, answer = post(url, data, timeout=120, content_type=content_type)
    wall = time.perf_counter() - start
    time.sleep(0.3)  # anything still running after the answer counts too
    peak = sampler.stop()
    errors = set()
    if status == 200:
        errors = {
            row["error"][:40] for row in json.loads(answer)["predictions"] if row.get("error")
        }
    return {
        "status": status, "wall_s": wall, "cpu_s": cpu_seconds(process) - cpu,
        "peak_mb": (peak - idle) / 2**20, "errors": errors,
        "message": "" if status == 200 else answer[-110:].decode(errors="replace"),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="*", help="names of the cases to run (default: all)")
    args = parser.parse_args()
    spec = ModelSpec(
        "small_cnn", [f"c{i}" for i in range(10)], 3, SIZE, [0.5] * 3, [0.25] * 3,
        widths=[32, 64, 128],
    )  # fmt: skip
    built = cases()
    names = args.cases or list(built)
    print(
        f"{'case':<13} {'body MB':>8} {'status':>6} {'wall s':>7} {'CPU s':>6} {'peak MB':>8}  answer"
    )
    with tempfile.TemporaryDirectory() as scratch:
        model = packaged_small_cnn(Path(scratch), spec)
        for name in names:
            data, content_type = built[name]
            with served_process(str(model), ROOT, command=stage_serve) as (url, server):
                got = measure(url, psutil.Process(server.pid), data, content_type)
            note = "; ".join(sorted(got["errors"])) or got["message"].replace("\n", " ")
            print(
                f"{name:<13} {len(data) / 2**20:>8.2f} {got['status']:>6} {got['wall_s']:>7.2f} "
                f"{got['cpu_s']:>6.2f} {got['peak_mb']:>8.0f}  {note}",
                flush=True,
            )


if __name__ == "__main__":
    main()
