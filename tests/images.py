"""Generated image files for ingest tests: every kind of file users really have."""

import io
import struct
from pathlib import Path

import numpy as np
from PIL import Image

RED, BLUE = (220, 20, 20), (20, 20, 220)


def save(path: Path, image: Image.Image, **options) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)
    return path


def rotated_jpeg(path: Path) -> Path:
    """Stored 20 wide x 10 high, left half red, right half blue, with EXIF orientation 6
    (rotate 90 degrees clockwise to display): displayed 10 wide x 20 high, red on top."""
    image = Image.new("RGB", (20, 10), BLUE)
    image.paste(RED, (0, 0, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6
    return save(path, image, format="JPEG", quality=95, exif=exif.tobytes())


def palette_png(path: Path) -> Path:
    """A palette image whose index 0 is transparent: left half transparent, right half green."""
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    image.paste(1, (4, 0, 8, 8))
    return save(path, image, format="PNG", transparency=0)


def rgba_png(path: Path) -> Path:
    """Top half opaque blue, bottom half fully transparent."""
    image = Image.new("RGBA", (8, 8), (*BLUE, 0))
    image.paste((*BLUE, 255), (0, 0, 8, 4))
    return save(path, image, format="PNG")


def sixteen_bit_png(path: Path, value: int = 65535) -> Path:
    array = np.full((8, 8), value, dtype=np.uint16)
    return save(path, Image.fromarray(array), format="PNG")  # uint16 -> mode I;16


def grey_jpeg(path: Path, value: int = 128) -> Path:
    return save(path, Image.new("L", (8, 8), value), format="JPEG", quality=100)


def cmyk_jpeg(path: Path) -> Path:
    return save(
        path, Image.new("CMYK", (8, 8), (0, 255, 255, 0)), format="JPEG", quality=100
    )  # red


def la_png(path: Path) -> Path:
    return save(path, Image.new("LA", (8, 8), (50, 255)), format="PNG")


def solid_png(path: Path, color: tuple[int, int, int], size: tuple[int, int] = (8, 8)) -> Path:
    return save(path, Image.new("RGB", size, color), format="PNG")


def truncated_jpeg(path: Path) -> Path:
    buffer = io.BytesIO()
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(buffer, format="JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


# Hostile files: what Pillow's plugins make of them is not an OSError. Each one stopped a whole
# ingest or predict run before decode_bytes caught every exception (Pillow 13).
ORIENTATION_6 = (0x0112, 3, 1, struct.pack("<HH", 6, 0))  # SHORT 6: rotate to display


def exif_ifd(entries: list[tuple[int, int, int, bytes]], next_ifd: int = 0) -> bytes:
    """An EXIF payload: a little-endian TIFF header and one IFD of raw (tag, type, count,
    4 value bytes) entries, with whatever types and counts a test chooses."""
    body = struct.pack("<H", len(entries))
    body += b"".join(
        struct.pack("<HHI", tag, kind, count) + value for tag, kind, count, value in entries
    )
    return b"Exif\x00\x00II*\x00" + struct.pack("<I", 8) + body + struct.pack("<I", next_ifd)


def jpeg_with_exif(exif: bytes, size: tuple[int, int] = (16, 8)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, RED).save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


def hostile_files() -> dict[str, bytes]:
    """{file name: bytes} of files that made Pillow raise something other than OSError:
    exif_transpose writes the EXIF back without the orientation, and a tag of a type its
    writer does not expect raises TypeError, struct.error or AttributeError; a DDS header with
    no pixel format raises NotImplementedError (named .png, as a mislabelled file is)."""
    return {
        "exif_typeerror.jpg": jpeg_with_exif(exif_ifd([ORIENTATION_6, (0x011A, 1, 1, b"abc\0")])),
        "exif_struct_error.jpg": jpeg_with_exif(
            exif_ifd([ORIENTATION_6, (0x0100, 1, 1, b"abc\0")])
        ),
        "exif_attribute_error.jpg": jpeg_with_exif(
            exif_ifd([ORIENTATION_6, (0x010E, 11, 1, b"abc\0")])
        ),
        "dds_as.png": dds_header(),
    }


def dds_header() -> bytes:
    """A DDS file header with no pixel format flags."""
    return b"DDS " + struct.pack("<I", 124) + bytes(120)
