"""Decoding one image file robustly into a fixed-size uint8 array.

Every way a file can be bad (empty, not an image, truncated, a decompression bomb) becomes a
BadImage with a reason for the ingest report, never a crash. Orientation (EXIF), palette,
alpha, CMYK, 16-bit and greyscale images are converted deliberately to the configured
channels, then resized by fastai's methods: squish, crop (centre) or pad.
"""

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pipeline.core.config import Resize
from pipeline.core.errors import StagewiseError, first_line

SIXTEEN_BIT_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
ORIENTATION_TAG = 0x0112
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)  # rotated by 90 degrees: width and height swap
EXPECTED_SHAPES = (
    "N x H x W or N x H x W x C, or a list of H x W or H x W x C images (C = 1, 3 or 4)"
)
MAX_PIXELS = 50_000_000  # the decompression bomb guard where no data.max_pixels is given
# Our own max_pixels check runs first; PIL's guard must not pre-empt it with a warning.
Image.MAX_IMAGE_PIXELS = None


class BadImage(Exception):
    """A file that cannot become a training image; the message is the reason."""


@dataclass(frozen=True)
class DecodeSettings:
    size: int
    channels: int  # 1 = greyscale, 3 = RGB
    resize: Resize
    background: tuple[int, int, int]  # behind transparent pixels, and padding
    max_pixels: int


@dataclass(frozen=True)
class Decoded:
    array: np.ndarray  # size x size x channels, uint8
    height: int  # as displayed, i.e. after EXIF orientation
    width: int
    mode: str  # PIL mode of the file, e.g. "RGB", "P", "I;16", "CMYK"


def decode_bytes(raw: bytes, settings: DecodeSettings) -> Decoded:
    """File bytes -> the fitted image; any bytes that are not a usable image raise BadImage,
    whose message is a one-line reason, and nothing else."""
    if not raw:
        raise BadImage("empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(raw)) as image:
            width, height = image.size
            if width * height > settings.max_pixels:
                raise BadImage(
                    f"too large: {width}x{height} = {width * height} pixels > data.max_pixels="
                    f"{settings.max_pixels} (decompression bomb guard)"
                )
            mode = image.mode
            if image.getexif().get(ORIENTATION_TAG, 1) in TRANSPOSING_ORIENTATIONS:
                width, height = height, width
            # JPEG can decode at 1/2, 1/4 or 1/8 scale directly: much faster for thumbnails.
            image.draft(None, (settings.size, settings.size))
            image.load()
            array = convert(ImageOps.exif_transpose(image), settings)
    except BadImage:
        raise
    except UnidentifiedImageError:
        raise BadImage("not an image: no decoder recognises the file") from None
    except MemoryError:
        raise BadImage("too large to decode in the memory available") from None
    # Broad on purpose: on hostile bytes PIL's plugins raise whatever their parsing hits, not
    # only OSError (TypeError or struct.error from a malformed EXIF tag that exif_transpose
    # writes back, NotImplementedError from a DDS pixel format, ...), and one bad file must be
    # a line in the report, never the end of an ingest, a predict run or a served batch.
    except Exception as e:
        raise BadImage(f"unreadable: {one_line(e)}") from None
    return Decoded(array=array, height=height, width=width, mode=mode)


def one_line(error: Exception) -> str:
    """An exception as a short reason: its first line, or its type where it has no message;
    the type is named too where the message alone (e.g. a TypeError's) would not say much."""
    if not str(error).strip() or isinstance(error, (OSError, ValueError, SyntaxError, EOFError)):
        return first_line(error)
    return f"{type(error).__name__}: {first_line(error)}"


def convert(image: Image.Image, settings: DecodeSettings) -> np.ndarray:
    """A decoded image -> size x size x channels uint8 array."""
    image = to_channels(image, settings.channels, settings.background)
    image = fit(image, settings.size, settings.resize, fill(settings.background, settings.channels))
    return np.asarray(image, dtype=np.uint8).reshape(
        settings.size, settings.size, settings.channels
    )


def convert_pixels(pixels: np.ndarray, settings: DecodeSettings) -> np.ndarray:
    """One uint8 H x W or H x W x C image (C = 1, 3 or 4; 4 = RGBA) -> size x size x channels,
    through the same PIL steps as a decoded file, so pixels and files are fitted alike."""
    if pixels.ndim == 3 and pixels.shape[2] == 1:
        pixels = pixels[..., 0]  # PIL has no H x W x 1 mode
    return convert(Image.fromarray(pixels), settings)


def fit_pixels(images: np.ndarray | list, settings: DecodeSettings) -> np.ndarray:
    """Raw images -> N x size x size x channels uint8, each fitted as ingest fitted the
    training images. images: an N x H x W (x C) batch, or a list of H x W (x C) images of
    any sizes; values must be integers 0..255 (uint8 or integer-valued numbers)."""
    if isinstance(images, np.ndarray) and images.dtype != object:
        batch = as_uint8(images if images.ndim != 3 else images[..., None])
        if batch.ndim != 4:
            raise StagewiseError(f"images must be {EXPECTED_SHAPES}; got shape {batch.shape}")
        if batch.shape[1:] == (settings.size, settings.size, settings.channels):
            return batch  # already the model's size: fitting would return every pixel as is
        images = list(batch)
    out = np.empty((len(images), settings.size, settings.size, settings.channels), np.uint8)
    for i, image in enumerate(images):
        out[i] = convert_pixels(image_pixels(image, i), settings)
    return out


def image_pixels(image: object, index: int) -> np.ndarray:
    """One user-given image (an array or nested lists) -> an H x W or H x W x C uint8 array."""
    try:
        array = np.asarray(image)
    except ValueError:  # ragged nested lists
        raise StagewiseError(
            f"image {index}: rows of different lengths; each image must be H x W or H x W x C"
        ) from None
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))) or not array.size:
        raise StagewiseError(
            f"image {index}: each image must be H x W or H x W x C with C = 1, 3 or 4; "
            f"got shape {array.shape}"
        )
    return as_uint8(array)


def as_uint8(array: np.ndarray) -> np.ndarray:
    """Pixel values as uint8; anything but integers 0..255 is refused, not cast: floats
    scaled to 0..1 or fractions would otherwise become confident wrong answers."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise StagewiseError(f"pixel values must be integers 0..255; got {array.dtype} values")
    if array.size and not (np.isfinite(array).all() and array.min() >= 0 and array.max() <= 255):
        raise StagewiseError(
            f"pixel values must be integers 0..255; got values from {array.min()} to {array.max()}"
        )
    if np.issubdtype(array.dtype, np.floating) and (array != np.rint(array)).any():
        raise StagewiseError(
            "pixel values must be integers 0..255; got fractions (images scaled to 0..1? "
            "send the 0..255 pixels)"
        )
    return array.astype(np.uint8)


def encode_png(pixels: np.ndarray) -> bytes:
    """A uint8 H x W x C image as PNG file bytes (lossless: decoding gives the pixels back)."""
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, "PNG")
    return buffer.getvalue()


def fill(background: tuple[int, int, int], channels: int) -> int | tuple[int, int, int]:
    """The background colour in the output mode (greyscale uses ITU-R 601 luma, as PIL does)."""
    if channels == 3:
        return tuple(background)
    r, g, b = background
    return round(0.299 * r + 0.587 * g + 0.114 * b)


def to_channels(image: Image.Image, channels: int, background: tuple[int, int, int]) -> Image.Image:
    """Any PIL mode -> "L" or "RGB", with each kind of source converted on purpose."""
    if image.mode in SIXTEEN_BIT_MODES:
        # 16-bit greyscale: scale 0..65535 to 0..255 (PIL's convert would clip at 255).
        values = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(values / 257), 0, 255).astype(np.uint8), "L")
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.rint(np.asarray(image)), 0, 255).astype(np.uint8), "L")
    elif image.mode == "P":
        image = image.convert("RGBA")  # honours the palette's transparency
    if image.mode in ("LA", "La", "PA", "RGBa", "RGBA"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, tuple(background))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        image = canvas
    return image.convert("L" if channels == 1 else "RGB")  # also CMYK, YCbCr, LAB, 1-bit


def fit(
    image: Image.Image, size: int, method: Resize, color: int | tuple[int, int, int]
) -> Image.Image:
    """Resize to size x size: squish (ignore aspect), crop (centre) or pad (letterbox)."""
    if image.size == (size, size):
        return image
    resample = Image.Resampling.BILINEAR
    if method == Resize.squish:
        return image.resize((size, size), resample)
    if method == Resize.crop:
        return ImageOps.fit(image, (size, size), method=resample)
    return ImageOps.pad(image, (size, size), method=resample, color=color)
