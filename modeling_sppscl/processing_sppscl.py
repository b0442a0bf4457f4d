"""Processor of SPP-SCL: a tokenizer and an image processor behind one call."""

import io
import os
from pathlib import Path

import numpy as np
import PIL.Image
from transformers import AutoProcessor, ConvNextImageProcessorPil, ProcessorMixin
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling

from .configuration_sppscl import PAPER_TEXT_MAX_LENGTH, SppSclConfig
from .remote_code_sppscl import save_with_code_files


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


class ImageLimitError(ValueError):
    """An image over `max_pixels` or `max_aspect_ratio` (or over PIL's decompression-bomb limit)."""


def _array_image(array: np.ndarray) -> PIL.Image.Image:
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ValueError(f"an image array must be uint8 with shape HxW or HxWxC (C = 1, 3 or 4), got {array.dtype} {array.shape}")
    return PIL.Image.fromarray(array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array)


def _check_limits(size: tuple[int, int], label: str, max_pixels: int | None, max_aspect_ratio: float | None) -> None:
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageLimitError(
            f"image {label} has {width} x {height} = {width * height:,} pixels, over the limit max_pixels={max_pixels:,}; "
            "downscale it, or pass a larger max_pixels (None for no limit) if its source is trusted"
        )
    if max_aspect_ratio is not None and max(width, height) > max_aspect_ratio * max(1, min(width, height)):
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
    least `reduced_size` (JPEG decodes at 1/2, 1/4 or 1/8 scale directly, by draft mode)."""
    if reduced_size is None:
        return _to_rgb(image)
    image.draft(None, (reduced_size, reduced_size))  # a no-op for formats other than JPEG
    rgb = _to_rgb(image)
    factor = min(rgb.size) // reduced_size
    return rgb.reduce(factor) if factor > 1 else rgb


def _label(image: ImageLike, name: str | None) -> str:
    return name or (f"file {image}" if isinstance(image, (str, os.PathLike)) else type(image).__name__)


def _read(image: ImageLike, label: str, max_pixels: int | None, max_aspect_ratio: float | None, use):
    """`use(opened_image)` on the image opened lazily (header read, limits checked, pixels not yet decoded)."""
    if isinstance(image, np.ndarray):
        image = _array_image(image)
    if isinstance(image, PIL.Image.Image):
        _check_limits(image.size, label, max_pixels, max_aspect_ratio)
        return use(image)
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

    The one place where the project opens images: readers, collators, the pipeline and the endpoint all come
    here. Errors are `ValueError`s that name the file (or `name`) so that a bad row can be found.

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


def paper_image_processor() -> ConvNextImageProcessorPil:
    """The authors' preprocessing: shorter side to 256 (bilinear), centre crop 224, ImageNet mean and std."""
    return ConvNextImageProcessorPil(
        size={"shortest_edge": 224},
        crop_pct=224 / 256,
        resample=PILImageResampling.BILINEAR,
        image_mean=IMAGENET_DEFAULT_MEAN,
        image_std=IMAGENET_DEFAULT_STD,
    )


class SppSclProcessor(ProcessorMixin):
    r"""
    Tokenizes texts and prepares images for [`SppSclModel`].

    Args:
        image_processor: a transformers image processor (PIL backends work without torchvision).
        tokenizer: the text tower's tokenizer.
        text_max_length (`int`, defaults to 202): texts are truncated to this many tokens.
        pad_to_max_length (`bool`, defaults to `False`): pad every text to `text_max_length`, as the paper
            variant needs (its text pooling averages over padding); otherwise pad to the longest text of the call.
    """

    def __init__(self, image_processor=None, tokenizer=None, text_max_length: int = PAPER_TEXT_MAX_LENGTH, pad_to_max_length: bool = False):
        if not isinstance(text_max_length, int) or text_max_length < 3:
            raise ValueError(f"SppSclProcessor.text_max_length must be an integer >= 3, got {text_max_length!r}")
        self.text_max_length = text_max_length
        self.pad_to_max_length = pad_to_max_length
        super().__init__(image_processor, tokenizer)

    @classmethod
    def for_config(cls, config: SppSclConfig, image_processor, tokenizer) -> "SppSclProcessor":
        """A processor whose padding matches `config`'s text pooling (fixed 202 tokens for the paper variant)."""
        fixed = config.text_max_length
        return cls(image_processor, tokenizer, text_max_length=fixed or PAPER_TEXT_MAX_LENGTH, pad_to_max_length=fixed is not None)

    def tokenize(self, text: str | list[str], return_tensors: str | None = "pt") -> BatchFeature:
        """Tokenize texts alone (the feature cache and the collators use this)."""
        texts = [text] if isinstance(text, str) else list(text)
        for index, item in enumerate(texts):
            if not isinstance(item, str) or not item.strip():
                raise ValueError(f"SppSclProcessor: text {index} is empty or not a string: {item!r}")
        encoded = self.tokenizer(
            texts,
            padding="max_length" if self.pad_to_max_length else "longest",
            truncation=True,
            max_length=self.text_max_length,
            return_tensors=return_tensors,
        )
        return BatchFeature(dict(encoded), tensor_type=return_tensors)

    def preprocess_images(self, images, return_tensors: str | None = "pt") -> BatchFeature:
        """Prepare images alone: PIL images, uint8 arrays, paths or bytes, one or a list."""
        batch = images if isinstance(images, (list, tuple)) else [images]
        loaded = [load_image(image, name=f"{index} ({image})" if isinstance(image, (str, os.PathLike)) else f"{index}") for index, image in enumerate(batch)]
        return self.image_processor(loaded, return_tensors=return_tensors)

    def __call__(self, images=None, text=None, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        """Prepare image-text pairs: `input_ids`, `attention_mask` (and `token_type_ids` where the tokenizer has
        them) and `pixel_values`."""
        if text is None or images is None:
            missing = "text" if text is None else "images"
            raise ValueError(f"SppSclProcessor needs both texts and images; {missing} is missing")
        texts = [text] if isinstance(text, str) else list(text)
        image_list = list(images) if isinstance(images, (list, tuple)) else [images]
        if len(texts) != len(image_list):
            raise ValueError(f"SppSclProcessor got {len(texts)} texts but {len(image_list)} images")
        features = dict(self.tokenize(texts, return_tensors=return_tensors))
        features.update(self.preprocess_images(image_list, return_tensors=return_tensors))
        return BatchFeature(features, tensor_type=return_tensors)

    @property
    def model_input_names(self) -> list[str]:
        return list(dict.fromkeys(self.tokenizer.model_input_names + self.image_processor.model_input_names))

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """Save as `ProcessorMixin` does, plus the code files (see `remote_code_sppscl`) that let `AutoProcessor`
        load the folder with `trust_remote_code=True` where this package is not installed."""
        return save_with_code_files(self, super().save_pretrained, save_directory, push_to_hub=push_to_hub, **kwargs)


AutoProcessor.register(SppSclConfig, SppSclProcessor, exist_ok=True)
SppSclProcessor.register_for_auto_class()

__all__ = ["DEFAULT_MAX_ASPECT_RATIO", "DEFAULT_MAX_PIXELS", "ImageLimitError", "SppSclProcessor", "image_size", "load_image", "paper_image_processor"]
