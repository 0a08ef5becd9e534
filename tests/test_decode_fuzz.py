"""decode_bytes on hostile bytes: seeded mutations of small PNG, JPEG, GIF, TIFF, WebP, BMP and
DDS files (truncated, flipped, overwritten, hostile EXIF, huge declared dimensions). Each must
decode to the configured shape or raise BadImage with a one-line reason: nothing else, since
any other exception stops a whole ingest, predict run or served batch."""

import io
import random
import struct
import warnings
import zlib
from collections import Counter

import numpy as np
from PIL import Image

from pipeline.core.config import Resize
from pipeline.data.decode import BadImage, DecodeSettings, decode_bytes
from tests.images import ORIENTATION_6, dds_header, exif_ifd, hostile_files, jpeg_with_exif

SEED = 1234
CASES_PER_ORIGINAL = 70  # x 14 originals, + the EXIF, dimension and DDS cases: over 1,500
SETTINGS = [
    DecodeSettings(8, 3, Resize.squish, (255, 255, 255), max_pixels=1_000_000),
    DecodeSettings(8, 1, Resize.pad, (0, 0, 0), max_pixels=1_000_000),
    DecodeSettings(8, 3, Resize.crop, (0, 0, 0), max_pixels=1_000_000),
]
# Tags Pillow knows the type of (so a wrongly typed value meets its writer) and pointers to
# sub-IFDs (so an offset leads anywhere).
EXIF_TAGS = [0x0100, 0x0101, 0x010E, 0x010F, 0x011A, 0x011B, 0x0128, 0x0131, 0x0132,
             0x0201, 0x0202, 0x0213, 0x8769, 0x8825, 0x829A, 0x9003, 0x9286, 0xA001, 0x927C]  # fmt: skip
TIFF_TYPES = [0, 1, 2, 3, 4, 5, 7, 9, 10, 11, 12, 13, 99]  # with 0 and 99: no such type


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def originals() -> dict[str, bytes]:
    """Small valid files of each format and the modes users have."""
    noise = np.random.default_rng(SEED).integers(0, 256, (9, 12, 3), dtype=np.uint8)
    rgb = Image.fromarray(noise)
    palette = rgb.convert("P")
    return {
        "png-rgb": encoded(rgb, "PNG"),
        "png-palette": encoded(palette, "PNG", transparency=0),
        "png-16bit": encoded(Image.fromarray(noise[..., 0].astype(np.uint16) * 257), "PNG"),
        "png-la": encoded(rgb.convert("LA"), "PNG"),
        "jpeg-rgb": encoded(rgb, "JPEG"),
        "jpeg-grey": encoded(rgb.convert("L"), "JPEG"),
        "jpeg-cmyk": encoded(rgb.convert("CMYK"), "JPEG"),
        "jpeg-rotated": jpeg_with_exif(exif_ifd([ORIENTATION_6])),
        "gif": encoded(palette, "GIF"),
        "tiff": encoded(rgb, "TIFF"),
        "tiff-deflate": encoded(rgb, "TIFF", compression="tiff_adobe_deflate"),
        "webp": encoded(rgb, "WEBP", quality=80),
        "bmp": encoded(rgb, "BMP"),
        "dds": encoded(rgb, "DDS"),
    }


def mutated(raw: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One random damage of raw: truncated, a few bytes flipped, a span overwritten, or a
    span deleted."""
    kind = rng.choice(["truncate", "flip", "overwrite", "delete"])
    data = bytearray(raw)
    if kind == "truncate":
        return kind, raw[: rng.randrange(1, len(raw))]
    if kind == "flip":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] ^= rng.randint(1, 255)
    elif kind == "overwrite":
        start = rng.randrange(len(data))
        data[start : start + rng.randint(1, 16)] = rng.randbytes(rng.randint(1, 16))
    else:
        start = rng.randrange(len(data))
        del data[start : start + rng.randint(1, 32)]
    return kind, bytes(data)


def random_entry(tag: int, rng: random.Random) -> tuple[int, int, int, bytes]:
    value = rng.choice(
        [struct.pack("<HH", 6, 0), b"abc\0", struct.pack("<I", 8), b"\xff" * 4, rng.randbytes(4)]
    )
    return tag, rng.choice(TIFF_TYPES), rng.choice([0, 1, 2, 4, 1000, 2**31]), value


def hostile_exif(rng: random.Random) -> bytes:
    """Orientation 6, or an orientation tag of a random type and count, beside wrongly typed
    tags; sometimes a broken next-IFD offset or a cut-off IFD."""
    orientation = ORIENTATION_6 if rng.random() < 0.5 else random_entry(0x0112, rng)
    others = [random_entry(rng.choice(EXIF_TAGS), rng) for _ in range(rng.randint(1, 3))]
    entries = [orientation, *others]
    rng.shuffle(entries)
    exif = exif_ifd(entries, next_ifd=rng.choice([0, 0, 8, 2**32 - 1, rng.randrange(2**32)]))
    return exif[: rng.randrange(10, len(exif) + 1)] if rng.random() < 0.2 else exif


def with_exif(exif: bytes, rng: random.Random) -> tuple[str, bytes]:
    image = Image.new("RGB", (12, 9), (10, 200, 30))
    fmt = rng.choice(["JPEG", "JPEG", "PNG", "WEBP"])  # which store the EXIF bytes as given
    return f"exif-{fmt.lower()}", encoded(image, fmt, exif=exif)


def png_dimensions(raw: bytes, width: int, height: int) -> bytes:
    """IHDR's width and height replaced, with its CRC recomputed so the chunk is 'valid'."""
    ihdr = raw[12:16] + struct.pack(">II", width, height) + raw[24:29]
    return raw[:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + raw[33:]


def bmp_dimensions(raw: bytes, width: int, height: int) -> bytes:
    return raw[:18] + struct.pack("<ii", width & 0x7FFFFFFF, height - 2**31) + raw[26:]


def gif_dimensions(raw: bytes, width: int, height: int) -> bytes:
    data = bytearray(raw)
    data[6:10] = struct.pack("<HH", width & 0xFFFF, height & 0xFFFF)  # logical screen
    frame = raw.index(b"\x2c\x00\x00\x00\x00")  # the image descriptor, at (0, 0)
    data[frame + 5 : frame + 9] = struct.pack("<HH", width & 0xFFFF, height & 0xFFFF)
    return bytes(data)


def jpeg_dimensions(raw: bytes, width: int, height: int) -> bytes:
    sof = raw.index(b"\xff\xc0") + 5  # after marker, length and precision
    return raw[:sof] + struct.pack(">HH", height & 0xFFFF, width & 0xFFFF) + raw[sof + 4 :]


def tiff_dimensions(raw: bytes, width: int, height: int) -> bytes:
    """ImageWidth and ImageLength made LONGs of the given values."""
    data = bytearray(raw)
    ifd = struct.unpack("<I", raw[4:8])[0]
    for i in range(struct.unpack("<H", raw[ifd : ifd + 2])[0]):
        entry = ifd + 2 + 12 * i
        tag = struct.unpack("<H", raw[entry : entry + 2])[0]
        if tag in (256, 257):
            value = width if tag == 256 else height
            data[entry + 2 : entry + 12] = struct.pack("<HII", 4, 1, value & 0xFFFFFFFF)
    return bytes(data)


def webp_dimensions(raw: bytes, width: int, height: int) -> bytes:
    """The VP8 (lossy) frame header's 14-bit width and height."""
    frame = raw.index(b"\x9d\x01\x2a") + 3
    dims = struct.pack("<HH", width & 0x3FFF, height & 0x3FFF)
    return raw[:frame] + dims + raw[frame + 4 :]


DIMENSIONS = {"png-rgb": png_dimensions, "bmp": bmp_dimensions, "gif": gif_dimensions,
              "jpeg-rgb": jpeg_dimensions, "tiff": tiff_dimensions, "webp": webp_dimensions}  # fmt: skip
SIZES = [(0, 0), (1, 1), (12, 9000), (1000, 999), (65535, 65535), (2**31 - 1, 2**31 - 1)]


def cases() -> list[tuple[str, bytes]]:
    """(what was done, bytes): seeded, so a failure names a case that can be rerun."""
    rng = random.Random(SEED)
    sources = originals()
    made = [(f"{name} as is", raw) for name, raw in sources.items()]
    for name, raw in sources.items():
        for _ in range(CASES_PER_ORIGINAL):
            kind, data = mutated(raw, rng)
            made.append((f"{name} {kind}", data))
    for _ in range(400):
        made.append(with_exif(hostile_exif(rng), rng))
    for name, resize in DIMENSIONS.items():
        for width, height in SIZES:
            resized = resize(sources[name], width, height)
            made += [(f"{name} {width}x{height}", resized)]
            made += [(f"{name} {width}x{height} truncated", resized[: len(resized) * 2 // 3])]
    made += [(f"hostile {name}", raw) for name, raw in hostile_files().items()]
    made += [("dds header", dds_header()), ("empty", b"")]
    return made


def test_any_bytes_decode_to_the_configured_shape_or_raise_bad_image():
    outcomes, escaped = Counter(), []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow warns about the corrupt EXIF it writes
        all_cases = cases()
    for i, (what, raw) in enumerate(all_cases):
        settings = SETTINGS[i % len(SETTINGS)]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF; not the point
                decoded = decode_bytes(raw, settings)
        except BadImage as e:
            reason = str(e)
            assert reason and "\n" not in reason, (what, reason)
            outcomes["BadImage"] += 1
        except Exception as e:  # what escapes is what this test looks for
            escaped.append(f"case {i} ({what}): {type(e).__module__}.{type(e).__name__}: {e}")
        else:
            expected = (settings.size, settings.size, settings.channels)
            assert decoded.array.shape == expected and decoded.array.dtype == np.uint8, what
            outcomes["decoded"] += 1
    assert not escaped, f"{len(escaped)} of {len(all_cases)} escaped:\n" + "\n".join(escaped[:20])
    # both outcomes are exercised, or the test would prove nothing
    assert len(all_cases) >= 1000 and min(outcomes["decoded"], outcomes["BadImage"]) >= 100, (
        outcomes
    )
