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


def _array_image(array: np.ndarray) -> PIL.Image.Image:
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (1, 3, 4)):
        raise ValueError(f"an image array must be uint8 with shape HxW or HxWxC (C = 1, 3 or 4), got {array.dtype} {array.shape}")
    return PIL.Image.fromarray(array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array)


def _decoded(source: str | os.PathLike | io.BytesIO) -> PIL.Image.Image:
    with PIL.Image.open(source) as opened:
        return opened.convert("RGB")


def load_image(image: ImageLike, name: str | None = None) -> PIL.Image.Image:
    """An RGB PIL image from a PIL image, an `H x W (x C)` uint8 array, a file path or encoded bytes.

    The one place where the project opens images: readers, collators, the pipeline and the endpoint all come
    here. Errors are `ValueError`s that name the file (or `name`) so that a bad row can be found.
    """
    if isinstance(image, PIL.Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray):
        return _array_image(image).convert("RGB")
    label = name or (f"file {image}" if isinstance(image, (str, os.PathLike)) else type(image).__name__)
    try:
        if isinstance(image, (str, os.PathLike)):
            if not Path(image).is_file():
                raise FileNotFoundError(f"no image file at {image}")
            return _decoded(image)
        if isinstance(image, (bytes, bytearray)):
            return _decoded(io.BytesIO(image))
        raise TypeError(f"expected a PIL image, a numpy array, a path or bytes, got {type(image).__name__}")
    except (OSError, ValueError, TypeError, PIL.UnidentifiedImageError) as error:
        raise ValueError(f"cannot read image {label}: {error}") from error


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

__all__ = ["SppSclProcessor", "load_image", "paper_image_processor"]
