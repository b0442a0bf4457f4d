"""Processor of SPP-SCL: a tokenizer and an image processor behind one call."""

import os
from collections.abc import Sequence
from typing import Any

from transformers import AutoProcessor, ConvNextImageProcessorPil, ProcessorMixin
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling

from .configuration_sppscl import PAPER_TEXT_MAX_LENGTH, SppSclConfig
from .image_utils_sppscl import (
    DEFAULT_MAX_ASPECT_RATIO,
    DEFAULT_MAX_PIXELS,
    ImageLimitError,
    decode_size,
    image_size,
    load_image,
)
from .remote_code_sppscl import save_with_code_files


# Texts are cut to this many characters before they are tokenized: far more than the 202 tokens (~1,000
# characters) the model reads, and a bound on what one text costs (a 20 MB text would be tokenized in full).
DEFAULT_MAX_TEXT_CHARACTERS = 10_000
# The limits of one call: attributes of the processor, saved with it; a call may override them (None lifts one).
LIMITS = ("max_text_characters", "max_pixels", "max_aspect_ratio")
REPLACEMENT_CHARACTER = "\ufffd"  # what a failed decode leaves in a text


def _visible(character: str) -> bool:
    return character.isprintable() and not character.isspace() and character != REPLACEMENT_CHARACTER


def text_problems(texts: Sequence[Any], tokenizer=None, input_ids=None) -> dict[int, str]:
    """The one rule that decides which texts cannot be used, for training data and serving alike: position -> why.

    A text is refused when it is not a string, is blank, has only invisible characters (control, zero-width and
    other format characters, U+FFFD), or -- given its `tokenizer` -- gives no token but the tokenizer's special
    ones: the model reads the tokens between the summary and the separator token, and would have none. An unknown
    token counts as a token: it stands for characters the vocabulary lacks (an emoji, say). `input_ids`: the
    texts' token ids when they are at hand (special tokens and padding may be among them), else they are computed.
    """
    problems = {}
    for index, text in enumerate(texts):
        if not isinstance(text, str):
            problems[index] = f"is not a string but {type(text).__name__}"
        elif not text.strip():
            problems[index] = "is empty"
        elif not any(map(_visible, text)):
            problems[index] = "has only invisible characters (control, zero-width or replacement characters), which tokenize to nothing"
    candidates = [index for index in range(len(texts)) if index not in problems]
    if tokenizer is None or not candidates:
        return problems
    if input_ids is None:
        rows = tokenizer([texts[index] for index in candidates], add_special_tokens=False)["input_ids"]
    else:
        rows = [input_ids[index] for index in candidates]
    special = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
    for index, row in zip(candidates, rows):
        if all(token in special for token in (row.tolist() if hasattr(row, "tolist") else row)):
            problems[index] = "has no token the tokenizer knows but its special tokens, so the model has nothing to read"
    return problems


def _refuse_texts(problems: dict[int, str], texts: Sequence[Any]) -> None:
    if problems:
        raise ValueError("SppSclProcessor: " + "; ".join(f"text {index} {problem}: {str(texts[index])[:40]!r}" for index, problem in problems.items()))


def _checked_limit(name: str, value: Any) -> Any:
    valid = value is None or (not isinstance(value, bool) and isinstance(value, (int, float)) and value >= 1)
    if not valid or (name != "max_aspect_ratio" and value is not None and not isinstance(value, int)):
        kind = "a number >= 1" if name == "max_aspect_ratio" else "a positive integer"
        raise ValueError(f"SppSclProcessor: {name} must be {kind} or None (no limit), got {value!r}")
    return value


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
    Tokenizes texts and prepares images for [`SppSclModel`], as [`CLIPProcessor`] does: `processor(images=...,
    text=...)` gives `input_ids`, `attention_mask` (and `token_type_ids` where the tokenizer makes them) and
    `pixel_values`; either may come alone. Other keyword arguments go to the tokenizer and the image processor, flat
    or as `text_kwargs={...}` / `images_kwargs={...}`, over the defaults `text_kwargs` and `images_kwargs`.

    The cost of one call is bounded by limits kept as attributes, saved with the processor; a call may override
    them (`processor(..., max_pixels=None)`), and None lifts one. Images are decoded at reduced size (see
    `decode_size`): the towers see ~224 pixels. Bad inputs raise a `ValueError` naming the input: a text refused by
    `text_problems`, an image that cannot be read, has no pixel or is over the limits.

    Args:
        image_processor: a transformers image processor (PIL backends work without torchvision).
        tokenizer: the text tower's tokenizer.
        text_max_length (`int`, defaults to 202): texts are truncated to this many tokens.
        pad_to_max_length (`bool`, defaults to `False`): pad every text to `text_max_length`, as the paper
            variant needs (its text pooling averages over padding); otherwise pad to the longest text of the call.
        max_text_characters (`int`, defaults to 10,000): texts are cut to this many characters before tokenizing.
        max_pixels (`int`, defaults to 64,000,000), max_aspect_ratio (`float`, defaults to 50): images over them
            are refused from their header, before decoding (see `load_image`).
    """

    images_kwargs = {"return_tensors": "pt"}

    def __init__(
        self,
        image_processor=None,
        tokenizer=None,
        text_max_length: int = PAPER_TEXT_MAX_LENGTH,
        pad_to_max_length: bool = False,
        max_text_characters: int | None = DEFAULT_MAX_TEXT_CHARACTERS,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        max_aspect_ratio: float | None = DEFAULT_MAX_ASPECT_RATIO,
    ):
        if not isinstance(text_max_length, int) or text_max_length < 3:
            raise ValueError(f"SppSclProcessor.text_max_length must be an integer >= 3, got {text_max_length!r}")
        self.text_max_length = text_max_length
        self.pad_to_max_length = pad_to_max_length
        self.max_text_characters = _checked_limit("max_text_characters", max_text_characters)
        self.max_pixels = _checked_limit("max_pixels", max_pixels)
        self.max_aspect_ratio = _checked_limit("max_aspect_ratio", max_aspect_ratio)
        super().__init__(image_processor, tokenizer)

    @classmethod
    def for_config(cls, config: SppSclConfig, image_processor, tokenizer, **limits) -> "SppSclProcessor":
        """A processor whose padding matches `config`'s text pooling (fixed 202 tokens for the paper variant)."""
        fixed = config.text_max_length
        return cls(image_processor, tokenizer, text_max_length=fixed or PAPER_TEXT_MAX_LENGTH, pad_to_max_length=fixed is not None, **limits)

    @property
    def text_kwargs(self) -> dict[str, Any]:
        """The tokenizer's defaults: truncation to `text_max_length`, padding to it (`pad_to_max_length`) or to the
        longest text of the call, PyTorch tensors."""
        padding = "max_length" if self.pad_to_max_length else "longest"
        return {"padding": padding, "truncation": True, "max_length": self.text_max_length, "return_tensors": "pt"}

    def pop_limits(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """The limits of one call: those in `kwargs` (taken out of it), else the processor's own."""
        return {name: _checked_limit(name, kwargs.pop(name)) if name in kwargs else getattr(self, name) for name in LIMITS}

    def load_images(self, images, **limits) -> list:
        """RGB PIL images, each decoded once, at the image processor's `decode_size`, from PIL images, uint8 arrays,
        paths or encoded bytes (one or a list), under the processor's limits or those given (`max_pixels`,
        `max_aspect_ratio`)."""
        limits = self.pop_limits(limits)
        if isinstance(images, (list, tuple)):
            batch, names = images, [f"{index} ({image})" if isinstance(image, (str, os.PathLike)) else f"{index}" for index, image in enumerate(images)]
        else:
            batch, names = [images], [None]  # named by `load_image`: its path, else its type
        reduced_size = decode_size(self.image_processor)
        return [
            load_image(image, name, max_pixels=limits["max_pixels"], max_aspect_ratio=limits["max_aspect_ratio"], reduced_size=reduced_size)
            for image, name in zip(batch, names)
        ]

    def __call__(self, images=None, text=None, **kwargs) -> BatchFeature:
        """Prepare image-text pairs, texts alone or images alone (see the class docstring)."""
        limits = self.pop_limits(kwargs)
        if images is None and text is None:
            raise ValueError("SppSclProcessor needs texts, images or both")
        texts = None
        if text is not None:
            texts = [text] if isinstance(text, str) else text
            if not isinstance(texts, (list, tuple)):
                raise ValueError(f"SppSclProcessor: text must be a string or a list of strings, got {type(text).__name__}")
            cap = limits["max_text_characters"]
            texts = [item[:cap] if isinstance(item, str) and cap is not None else item for item in texts]
            _refuse_texts(text_problems(texts), texts)
        if images is not None:
            images = self.load_images(images, **limits)
        if texts is not None and images is not None and len(texts) != len(images):
            raise ValueError(f"SppSclProcessor got {len(texts)} texts but {len(images)} images")
        # Our defaults under the caller's, passed explicitly: transformers before 5.24 does not read them from the
        # processor's attributes (and refuses a key given both flat and in the modality's dict).
        for modality in ("text_kwargs", "images_kwargs"):
            defaults = {key: value for key, value in getattr(self, modality).items() if key not in kwargs}
            kwargs[modality] = {**defaults, **kwargs.get(modality, {})}
        features = super().__call__(images=images, text=texts, **kwargs)
        if texts is not None:
            _refuse_texts(text_problems(texts, self.tokenizer, features["input_ids"]), texts)
        return features

    def tokenize(self, text: str | list[str], return_tensors: str | None = "pt") -> BatchFeature:
        """Tokenize texts alone (the feature cache and the collators use this)."""
        return self(text=text, return_tensors=return_tensors)

    def preprocess_images(self, images, return_tensors: str | None = "pt") -> BatchFeature:
        """Prepare images alone: PIL images, uint8 arrays, paths or bytes, one or a list."""
        return self(images=images, return_tensors=return_tensors)

    @property
    def model_input_names(self) -> list[str]:
        return list(dict.fromkeys(self.tokenizer.model_input_names + self.image_processor.model_input_names))

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """Save as `ProcessorMixin` does, plus the code files (see `remote_code_sppscl`) that let `AutoProcessor`
        load the folder with `trust_remote_code=True` where this package is not installed."""
        return save_with_code_files(self, super().save_pretrained, save_directory, push_to_hub=push_to_hub, **kwargs)


AutoProcessor.register(SppSclConfig, SppSclProcessor, exist_ok=True)
SppSclProcessor.register_for_auto_class()

__all__ = [
    "DEFAULT_MAX_ASPECT_RATIO",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MAX_TEXT_CHARACTERS",
    "ImageLimitError",
    "SppSclProcessor",
    "image_size",
    "load_image",
    "paper_image_processor",
    "text_problems",
]
