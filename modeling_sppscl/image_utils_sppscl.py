"""Reading images for SPP-SCL: the one opener of the project (readers, collators, processor, pipeline, endpoint).

It takes a PIL image, an `H x W (x C)` uint8 array, a file path or encoded bytes; checks the limits from the header
before any pixel is decoded; decodes large images at reduced size (the towers see ~224 pixels); and converts every
PIL mode to RGB faithfully. Errors are `ValueError`s that name the image so that a bad row or request can be found.
"""

import io
import math
import os
from pathlib import Path

import numpy as np
import PIL.Image


ImageLike = PIL.Image.Image | np.ndarray | str | os.PathLike | bytes

# Limits checked from the header, before any pixel is decoded. 64 megapixels admit the largest photos of
# today's phones and cameras (48-61 MP) and bound a decoded RGB image to ~200 MB; an aspect ratio of 50:1
# admits long phone screenshots and panoramas, yet bounds what a resize of the shorter side to 224-256 pixels
# can blow up to (a 1 x 40,000,000 image would otherwise become 224 x 9 billion pixels).
DEFAULT_MAX_PIXELS = 64_000_000
DEFAULT_MAX_ASPECT_RATIO = 50.0
# Transparent pixels are shown on white, as a browser shows a transparent image on a page by default.
ALPHA_BACKGROUND = (255, 255, 255)
# Modes whose samples exceed 8 bits: scaled to 0..255 (not clipped) before the conversion to RGB.
HIGH_DEPTH_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
UINT16_MAX = 65535
# Modes that `PIL.Image.reduce` cannot shrink: they are converted to RGB first.
UNREDUCIBLE_MODES = ("1", "P", "I;16", "I;16L", "I;16B", "I;16N")
URL_SCHEMES = ("http://", "https://", "ftp://")


class ImageLimitError(ValueError):
    """An image over `max_pixels` or `max_aspect_ratio` (or over PIL's decompression-bomb limit)."""


def _array_image(array: np.ndarray, label: str) -> PIL.Image.Image:
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ValueError(
            f"cannot read image {label}: an image array must be uint8 with shape HxW or HxWxC (C = 1, 3 or 4), got {array.dtype} {array.shape}"
        )
    return PIL.Image.fromarray(array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array)


def _check_limits(size: tuple[int, int], label: str, max_pixels: int | None, max_aspect_ratio: float | None) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise ValueError(f"image {label} is empty ({width} x {height} pixels); pass an image with at least one pixel")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageLimitError(
            f"image {label} has {width} x {height} = {width * height:,} pixels, over the limit max_pixels={max_pixels:,}; "
            "downscale it, or pass a larger max_pixels (None for no limit) if its source is trusted"
        )
    if max_aspect_ratio is not None and max(width, height) > max_aspect_ratio * min(width, height):
        raise ImageLimitError(
            f"image {label} is {width} x {height} pixels, an aspect ratio over the limit max_aspect_ratio={max_aspect_ratio:g}; "
            "crop it, or pass a larger max_aspect_ratio (None for no limit)"
        )


def _eight_bit(image: PIL.Image.Image) -> PIL.Image.Image:
    """An "L" image from a high-depth one, scaled rather than clipped.

    I;16*: 0..65535 to 0..255. I (32-bit, what 16-bit files may decode to): the same when its values fit in
    0..65535, else its min..max range. F: 0..1 to 0..255 when its values lie there (the float-image convention),
    else its min..max range; NaN counts as 0.
    """
    values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if image.mode == "F" and low >= 0 and high <= 1:
        scaled = values * 255
    elif image.mode != "F" and low >= 0 and high <= UINT16_MAX:
        scaled = values * (255 / UINT16_MAX)
    else:
        scaled = (values - low) * (255 / (high - low)) if high > low else np.zeros_like(values)
    return PIL.Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), mode="L")


def _to_rgb(image: PIL.Image.Image) -> PIL.Image.Image:
    """RGB from any mode: high depth scaled to 8 bits, transparency composited on `ALPHA_BACKGROUND`."""
    if image.mode in HIGH_DEPTH_MODES:
        return _eight_bit(image).convert("RGB")
    if image.mode == "La":  # premultiplied; PIL converts it to RGBA only through LA
        image = image.convert("LA")
    if image.has_transparency_data:
        background = PIL.Image.new("RGBA", image.size, (*ALPHA_BACKGROUND, 255))
        return PIL.Image.alpha_composite(background, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")


def _rgb_at_size(image: PIL.Image.Image, reduced_size: int | None) -> PIL.Image.Image:
    """`image` in RGB; with `reduced_size`, shrunk by the largest integer factor that keeps its shorter side at
    least `reduced_size` (JPEG decodes at 1/2, 1/4 or 1/8 scale directly, by draft mode). The shrinking comes before
    the conversion where the mode allows it, so that a large image is never held twice at full size."""
    if reduced_size is None:
        return _to_rgb(image)
    image.draft(None, (reduced_size, reduced_size))  # a no-op for formats other than JPEG
    factor = min(image.size) // reduced_size
    if factor < 2:
        return _to_rgb(image)
    if image.mode in UNREDUCIBLE_MODES:
        return _to_rgb(image).reduce(factor)
    return _to_rgb(image.reduce(factor))


def _label(image: ImageLike, name: str | None) -> str:
    return name or (f"file {image}" if isinstance(image, (str, os.PathLike)) else type(image).__name__)


def _read(image: ImageLike, label: str, max_pixels: int | None, max_aspect_ratio: float | None, use):
    """`use(opened_image)` on the image opened lazily (header read, limits checked, pixels not yet decoded)."""
    if isinstance(image, np.ndarray):
        image = _array_image(image, label)
    if isinstance(image, PIL.Image.Image):
        _check_limits(image.size, label, max_pixels, max_aspect_ratio)
        return use(image)
    if isinstance(image, str) and image.lower().startswith(URL_SCHEMES):
        raise ValueError(f"cannot read image {label}: URLs are not fetched; download the image and pass its file or bytes")
    if isinstance(image, (str, os.PathLike)):
        if not Path(image).is_file():
            raise ValueError(f"cannot read image {label}: no image file at {image}")
        source = image
    elif isinstance(image, (bytes, bytearray)):
        source = io.BytesIO(image)
    else:
        raise ValueError(f"cannot read image {label}: expected a PIL image, a numpy array, a path or bytes, got {type(image).__name__}")
    try:
        with PIL.Image.open(source) as opened:
            _check_limits(opened.size, label, max_pixels, max_aspect_ratio)
            return use(opened)
    except (ImageLimitError, MemoryError):
        raise
    except PIL.Image.DecompressionBombError as error:
        raise ImageLimitError(
            f"image {label} is over PIL's decompression-bomb limit ({error}); raise PIL.Image.MAX_IMAGE_PIXELS and max_pixels if its source is trusted"
        ) from error
    except Exception as error:  # PIL reports malformed files with many types: OSError, SyntaxError, EOFError, struct.error...
        raise ValueError(f"cannot read image {label}: {type(error).__name__}: {error}") from error


def image_size(
    image: ImageLike, name: str | None = None, *, max_pixels: int | None = DEFAULT_MAX_PIXELS, max_aspect_ratio: float | None = DEFAULT_MAX_ASPECT_RATIO
) -> tuple[int, int]:
    """(width, height) from the image's header alone, after the limits of `load_image` are checked: the cheap
    check that a file is there, is an image and is within the limits (truncation shows only when decoding)."""
    return _read(image, _label(image, name), max_pixels, max_aspect_ratio, lambda opened: opened.size)


def load_image(
    image: ImageLike,
    name: str | None = None,
    *,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    max_aspect_ratio: float | None = DEFAULT_MAX_ASPECT_RATIO,
    reduced_size: int | None = None,
) -> PIL.Image.Image:
    """An RGB PIL image from a PIL image, an `H x W (x C)` uint8 array, a file path or encoded bytes.

    Errors are `ValueError`s that name the file (or `name`): an image with no pixel (0 x 0), a URL (not fetched),
    a missing or malformed file, an array of another type or shape.

    Args:
        max_pixels, max_aspect_ratio: limits checked from the header, before any pixel is decoded (defaults
            `DEFAULT_MAX_PIXELS`, `DEFAULT_MAX_ASPECT_RATIO`; None for none); an image over them, or over PIL's
            decompression-bomb limit, raises `ImageLimitError` (a `ValueError`).
        reduced_size: decode at a reduced size whose shorter side stays at least this (JPEG at 1/2 to 1/8 scale,
            cheaply, by draft mode; other formats are decoded, then shrunk by an integer factor). Every byte is
            still read, so `reduced_size=1` is a cheap full check of a file, truncation included.

    Every PIL mode is converted faithfully: samples over 8 bits (I;16, I;16B, I, F) are scaled to 0..255, not
    clipped (see `_eight_bit`); transparency (RGBA, LA, PA, P or RGB with a transparent colour) is composited on
    white (`ALPHA_BACKGROUND`); other modes (1, L, P, CMYK, YCbCr, LAB, HSV...) go through PIL's conversion.
    """
    if reduced_size is not None and (not isinstance(reduced_size, int) or reduced_size < 1):
        raise ValueError(f"reduced_size must be a positive integer or None, got {reduced_size!r}")
    return _read(image, _label(image, name), max_pixels, max_aspect_ratio, lambda opened: _rgb_at_size(opened, reduced_size))


def decode_size(image_processor) -> int | None:
    """The `reduced_size` at which images may be decoded for `image_processor` (see `load_image`): the largest side
    it resizes to, before its centre crop (`crop_pct`), so that it still shrinks what it is given. None when it
    does not resize, or resizes by a rule other than a side length."""
    size = getattr(image_processor, "size", None)
    if not getattr(image_processor, "do_resize", False) or not size:
        return None
    sides = [side for key, side in dict(size).items() if key in ("shortest_edge", "longest_edge", "height", "width") and side]
    return math.ceil(max(sides) / min(getattr(image_processor, "crop_pct", None) or 1.0, 1.0)) if sides else None


__all__ = [
    "ALPHA_BACKGROUND",
    "DEFAULT_MAX_ASPECT_RATIO",
    "DEFAULT_MAX_PIXELS",
    "ImageLike",
    "ImageLimitError",
    "decode_size",
    "image_size",
    "load_image",
]
