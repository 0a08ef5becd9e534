"""What one request to the served model may cost, checked before any image is decoded.

An image's cost is not its size in bytes: a 6 KB PNG can hold 49 million pixels, a JPEG can
repeat a scan (a pass over every block of the image) for each 31 bytes, and PIL parses PNG
chunks, JPEG markers, GIF sub-blocks and TIFF strips one at a time in Python (12 MB of empty
PNG chunks took 2.5 s to open). So the served model first reads each file's structure and
its header (PIL's Image.open reads only the header) and:
- accepts the formats training reads (data.extensions: JPEG, PNG, GIF, BMP, TIFF, WebP),
- refuses a file with far more chunks, markers, sub-blocks or strips than its size needs, or
  a JPEG of more than MAX_JPEG_SCANS scans,
- weighs the pixels the decoder will work on (decode_weight) against a per-image cap (that
  row gets an error) and a per-request budget (the whole request is refused).
A request is also cut off at its deadline, between batches (REQUEST_DEADLINE).
"""

import io
import time
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from PIL import Image

from pipeline.core.errors import StagewiseError, first_line
from pipeline.data.decode import SIXTEEN_BIT_MODES

# When the request being answered must be done (time.monotonic()), set by the server for each
# request (pipeline/model/serving.py) and None outside it. A context variable, because the
# deadline belongs to one request: MLflow's app runs predict in a worker thread with
# asyncio.to_thread, which carries the request's context variables into it.
REQUEST_DEADLINE: ContextVar[float | None] = ContextVar("request_deadline", default=None)

# The formats training reads (data.extensions), by their first bytes; Image.open is then
# allowed that format only, so no other PIL plugin (EPS, PSD, JPEG 2000, ...) parses the file.
MAGIC = {
    b"\xff\xd8\xff": "JPEG",  # MPO (phone photos with a depth map) opens as JPEG too
    b"\x89PNG\r\n\x1a\n": "PNG",
    b"GIF87a": "GIF",
    b"GIF89a": "GIF",
    b"II*\x00": "TIFF",
    b"MM\x00*": "TIFF",
    b"II+\x00": "TIFF",  # BigTIFF
    b"MM\x00+": "TIFF",
    b"BM": "BMP",
}
FORMATS = "JPEG, PNG, GIF, BMP, TIFF or WebP"
STRUCTURES = {"JPEG": "markers", "PNG": "chunks", "GIF": "blocks", "TIFF": "tags"}
# libjpeg's progressive mode writes 6-10 scans; each costs a pass over all the image's blocks.
MAX_JPEG_SCANS = 100
# PNG chunks that PIL inflates while opening a file (up to 1 MiB each): charged as decoding
# work of this many megapixels (measured: 1 MiB inflated and decoded to text took ~2.3 ms,
# about what a quarter megapixel of PNG pixels takes to decode).
INFLATED_CHUNK_MEGAPIXELS = 0.25
BASELINE_JPEG = (0xC0, 0xC1)  # SOF0, SOF1: sequential Huffman, decoded at 1/8 scale
PROGRESSIVE_JPEG = (0xC2, 0xCA)  # SOF2, SOF10


@dataclass(frozen=True)
class RequestLimits:
    """The served model's limits per request (serve.* in conf/serve/default.yaml)."""

    max_rows: int
    max_megapixels: float  # decoding work of all the images of one request
    max_image_megapixels: float  # decoding work of one image
    max_json_values: int  # checked by the server as the body arrives (json_values)


@dataclass(frozen=True)
class ImageCost:
    megapixels: float  # decoding work: pixels x decode_weight, in millions
    refused: str  # why this file is not decoded ("" = it is)


def json_values(chunk: bytes) -> int:
    """An upper bound on the JSON values (numbers, strings, arrays, objects) in a piece of a
    body, counted without parsing it: each value but the last of an array or object is
    followed by a comma, and each array or object opens with a bracket (base64 text has
    neither). Parsing costs per value, not per byte: 16 MB of `[[]],` rows took MLflow 10 s
    and 1.1 GB to parse, 16 MB of `1e0,` pixels 360 MB."""
    return chunk.count(b",") + chunk.count(b"[") + chunk.count(b"{")


def check_rows(rows: int, limits: RequestLimits) -> None:
    if rows > limits.max_rows:
        raise StagewiseError(
            f"{rows} rows in one request; this server takes at most serve.max_rows="
            f"{limits.max_rows}: send them in several requests"
        )


def check_deadline(deadline: float | None) -> None:
    """Stops a request's work once its time is up (MLflow's server has already answered it
    with a 504 by then, but its worker thread would otherwise go on to the end)."""
    if deadline is not None and time.monotonic() > deadline:
        raise StagewiseError(
            "the request ran past the server's timeout (MLFLOW_SCORING_SERVER_REQUEST_TIMEOUT); "
            "send fewer images per request"
        )


def screen(files: list[bytes], limits: RequestLimits) -> list[ImageCost]:
    """Each file's decoding work, and why it will not be decoded where it will not, from
    structures and headers only. Raises StagewiseError when the decodable files together
    exceed the request's budget, so that such a request costs its headers and nothing more."""
    costs = [image_cost(raw) for raw in files]
    costs = [
        ImageCost(
            c.megapixels,
            f"too large: {c.megapixels:.1f} megapixels of decoding > serve.max_image_megapixels="
            f"{limits.max_image_megapixels:g}; send a smaller image",
        )
        if not c.refused and c.megapixels > limits.max_image_megapixels
        else c
        for c in costs
    ]
    total = sum(c.megapixels for c in costs if not c.refused)
    if total > limits.max_megapixels:
        raise StagewiseError(
            f"the images of this request take {total:.1f} megapixels of decoding > "
            f"serve.max_request_megapixels={limits.max_megapixels:g}; send fewer or smaller "
            "images per request"
        )
    return costs


def steps(megapixels: list[float], max_images: int, max_megapixels: float) -> Iterator[range]:
    """Consecutive rows in steps of at most max_images and about max_megapixels of decoding
    work (one image above it is a step of its own): the deadline is checked between steps."""
    start, work = 0, 0.0
    for i, cost in enumerate(megapixels):
        if i > start and (i - start == max_images or work + cost > max_megapixels):
            yield range(start, i)
            start, work = i, 0.0
        work += cost
    if start < len(megapixels):
        yield range(start, len(megapixels))


def image_cost(raw: bytes) -> ImageCost:
    """The decoding work of one encoded file, or why it is refused, without decoding it."""
    kind = next((k for magic, k in MAGIC.items() if raw.startswith(magic)), None)
    if kind is None and raw[:4] == b"RIFF" and raw[8:12] == b"WEBP":
        kind = "WEBP"
    if kind is None:
        return ImageCost(0, f"not an image this server reads: send {FORMATS} files")
    # PIL's per-structure Python work, bounded by the file's size: a file may have one
    # structure per 256 bytes, plus a few (a real PNG has 8-64 KiB per chunk).
    cap = 64 + len(raw) // 256
    structures, sof, inflated = 0, None, 0
    if kind == "JPEG":
        structures, sof = jpeg_structures(raw, cap)
        if (scans := raw.count(b"\xff\xda")) > MAX_JPEG_SCANS:
            return ImageCost(0, f"unreadable: a JPEG of {scans} scans > {MAX_JPEG_SCANS}")
    elif kind == "PNG":
        structures, inflated = png_structures(raw, cap)
    elif kind == "GIF":
        structures = gif_structures(raw, cap)
    elif kind == "TIFF":
        structures = tiff_entries(raw)
    if structures > cap:
        return ImageCost(
            0, f"unreadable: more {kind} {STRUCTURES[kind]} than a {len(raw)}-byte file needs"
        )
    try:
        with Image.open(io.BytesIO(raw), formats=[kind]) as image:
            if kind == "TIFF" and structures + len(image.tile) > cap:
                return ImageCost(
                    0, f"unreadable: more TIFF tags and strips than a {len(raw)}-byte file needs"
                )
            width, height = image.size
            weight = decode_weight(kind, sof, image.mode)
    # Broad on purpose: on hostile bytes PIL's header parsers raise nearly anything (struct
    # errors, IndexError, ValueError from text chunks, ...); any of them is this file's error,
    # never the whole request's.
    except Exception as e:
        return ImageCost(0, f"unreadable: {first_line(e)}")
    megapixels = width * height * weight / 1e6 + inflated * INFLATED_CHUNK_MEGAPIXELS
    return ImageCost(megapixels, "")


def decode_weight(kind: str, sof: int | None, mode: str) -> float:
    """Work per pixel of decoding (pipeline/data/decode.py) relative to an 8-bit image's,
    measured on one core (ns and peak bytes per pixel): 8-bit PNG, GIF, TIFF, WebP 15-36 ns
    and 4-16 B; 16-bit and float images 68 ns and 28-32 B (decode widens them to float64);
    progressive JPEG 4-12 ns and 3-8 B (every coefficient is kept until the last scan);
    baseline JPEG 0.5-1.1 ns and 0.2 B (decoded at 1/8 scale)."""
    if kind == "JPEG":
        return 1 / 16 if sof in BASELINE_JPEG else 0.5 if sof in PROGRESSIVE_JPEG else 1.0
    return 2.0 if mode in (*SIXTEEN_BIT_MODES, "F") else 1.0


def jpeg_structures(raw: bytes, cap: int) -> tuple[int, int | None]:
    """Markers and stray bytes before the first scan (PIL's JPEG header loop takes one at a
    time), counted up to cap + 1; and the frame's SOF marker (its kind of coding)."""
    pos, count, sof = 2, 0, None
    while pos + 1 < len(raw) and count <= cap:
        count += 1
        marker = raw[pos + 1]
        if raw[pos] != 0xFF or marker in (0x00, 0xFF):
            pos += 1  # stray or fill byte
        elif marker == 0xDA:  # start of scan: libjpeg (C) reads the rest
            break
        elif marker == 0x01 or 0xD0 <= marker <= 0xD9:  # markers without a length
            pos += 2
        else:
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                sof = marker
            pos += 2 + int.from_bytes(raw[pos + 2 : pos + 4], "big")
    return count, sof


def png_structures(raw: bytes, cap: int) -> tuple[int, int]:
    """Chunks (PIL reads each in Python), counted up to cap + 1; and how many of them PIL
    inflates while opening (compressed text and ICC profiles)."""
    pos, count, inflated = 8, 0, 0
    while pos + 8 <= len(raw) and count <= cap:
        count += 1
        kind = raw[pos + 4 : pos + 8]
        if kind == b"IEND":
            break
        inflated += kind in (b"zTXt", b"iTXt", b"iCCP")
        pos += 12 + int.from_bytes(raw[pos : pos + 4], "big")
    return count, inflated


def gif_structures(raw: bytes, cap: int) -> int:
    """Blocks, sub-blocks and stray bytes before the first image (PIL reads each in Python),
    counted up to cap + 1."""
    flags = raw[10] if len(raw) > 10 else 0
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)  # after the global palette
    count = 0
    while pos < len(raw) and count <= cap and raw[pos] not in b",;":
        count += 1
        if raw[pos] != ord("!"):
            pos += 1  # stray byte
            continue
        pos += 2  # extension introducer and label, then its sub-blocks up to an empty one
        while pos < len(raw) and raw[pos] and count <= cap:
            count += 1
            pos += 1 + raw[pos]
        pos += 1
    return count


def tiff_entries(raw: bytes) -> int:
    """Tags of the first directory (PIL reads each in Python on opening)."""
    order = "little" if raw[:2] == b"II" else "big"
    if raw[2:4] in (b"+\x00", b"\x00+"):  # BigTIFF: 8-byte offset and count
        offset = int.from_bytes(raw[8:16], order)
        return int.from_bytes(raw[offset : offset + 8], order)
    offset = int.from_bytes(raw[4:8], order)
    return int.from_bytes(raw[offset : offset + 2], order)
