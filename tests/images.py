"""Generated image files for ingest tests: every kind of file users really have."""

import io
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
