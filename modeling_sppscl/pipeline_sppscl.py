"""`image-text-classification`: a transformers pipeline that scores the labels of image-text pairs."""

import os
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
from transformers import AutoModel, Pipeline
from transformers.feature_extraction_utils import BatchFeature
from transformers.pipelines import PIPELINE_REGISTRY

from .processing_sppscl import load_image


PIPELINE_TASK = "image-text-classification"
INPUT_KEYS = ("image", "text")


def _image_problem(image: Any) -> str | None:
    """Why `image` cannot be used (None when it can), checked before any inference runs."""
    if isinstance(image, PIL.Image.Image):
        return None
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (1, 3, 4)):
            return f"an image array must be uint8 with shape HxW or HxWxC (C = 1, 3 or 4), got {image.dtype} {image.shape}"
        return None
    if isinstance(image, (str, os.PathLike)):
        return _image_file_problem(Path(image))
    return f"'image' must be a PIL image, a path or a uint8 numpy array, got {type(image).__name__}"


def _image_file_problem(path: Path) -> str | None:
    if not path.is_file():
        return f"no image file at {path}"
    try:
        # Opening reads only the header: enough to tell an image from another file without decoding it yet.
        with PIL.Image.open(path):
            return None
    except (OSError, PIL.UnidentifiedImageError) as error:
        return f"cannot read image file {path}: {error}"


def _pair_problem(pair: Any) -> str | None:
    if not isinstance(pair, dict):
        return f"expected a dict with keys 'image' and 'text', got {type(pair).__name__}"
    missing = [key for key in INPUT_KEYS if pair.get(key) is None]
    if missing:
        return f"missing {' and '.join(repr(key) for key in missing)}"
    unexpected = sorted(set(pair) - set(INPUT_KEYS))
    if unexpected:
        return f"unexpected keys {unexpected} (an input has only 'image' and 'text')"
    text = pair["text"]
    if not isinstance(text, str):
        return f"'text' must be a string, got {type(text).__name__}"
    if not text.strip():
        return "'text' is empty"
    return _image_problem(pair["image"])


def checked_pair(pair: Any, index: int) -> dict[str, Any]:
    """The input `pair` tagged with its position, or a `ValueError` naming the position and the problem."""
    problem = _pair_problem(pair)
    if problem is not None:
        raise ValueError(f"image-text-classification input {index}: {problem}")
    return {**pair, "index": index}


class ImageTextClassificationPipeline(Pipeline):
    """Label scores for image-text pairs with an SPP-SCL model.

    Inputs are `{"image": PIL image | path | uint8 numpy array, "text": str}` or a list of them; each gets a list
    of `{"label", "score"}` (softmax probabilities), best first. `top_k` keeps that many labels (all by default).
    `batch_size` groups pairs into one forward pass: with the paper variant, whose fusion attends across the batch,
    a pair's scores then depend on its batch-mates.

    Example:

    ```python
    >>> from transformers import pipeline
    >>> classify = pipeline(model="path/to/sppscl-folder", trust_remote_code=True)
    >>> classify({"image": "photo.jpg", "text": "what a lovely day"}, top_k=1)
    [{'label': 'positive', 'score': 0.91}]
    ```
    """

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False

    def __call__(self, inputs: dict[str, Any] | list[dict[str, Any]], **kwargs) -> list[dict[str, Any]] | list[list[dict[str, Any]]]:
        """Score one pair (a dict) or a list of pairs; bad inputs raise a `ValueError` before any inference."""
        if isinstance(inputs, dict):
            return super().__call__(checked_pair(inputs, 0), **kwargs)
        if not isinstance(inputs, (list, tuple)):
            raise ValueError(
                f"image-text-classification expects a dict {{'image': ..., 'text': ...}} or a list of them, got {type(inputs).__name__}"
            )
        if not inputs:
            return []
        return super().__call__([checked_pair(pair, index) for index, pair in enumerate(inputs)], **kwargs)

    def _sanitize_parameters(self, top_k: int | None = None, **unexpected) -> tuple[dict, dict, dict]:
        if unexpected:
            raise TypeError(f"image-text-classification got unexpected parameters {sorted(unexpected)} (it takes top_k and batch_size)")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive integer or None (all labels), got {top_k!r}")
        return {}, {}, ({"top_k": top_k} if top_k is not None else {})

    def preprocess(self, pair: dict[str, Any]) -> BatchFeature:
        try:
            image = load_image(pair["image"])
        except ValueError as error:
            raise ValueError(f"image-text-classification input {pair['index']}: {error}") from error
        features = self.processor(images=image, text=pair["text"], return_tensors="pt")
        features["pixel_values"] = features["pixel_values"].to(self.dtype)
        return features

    def _forward(self, model_inputs: BatchFeature) -> dict[str, Any]:
        return {"logits": self.model(**model_inputs).logits}

    def postprocess(self, model_outputs: dict[str, Any], top_k: int | None = None) -> list[dict[str, Any]]:
        scores = model_outputs["logits"][0].float().softmax(dim=-1).tolist()
        id2label = self.model.config.id2label
        ranked = sorted(
            ({"label": id2label[index], "score": score} for index, score in enumerate(scores)),
            key=lambda entry: entry["score"],
            reverse=True,
        )
        return ranked if top_k is None else ranked[:top_k]


PIPELINE_REGISTRY.register_pipeline(
    PIPELINE_TASK, pipeline_class=ImageTextClassificationPipeline, pt_model=AutoModel, type="multimodal"
)

__all__ = ["PIPELINE_TASK", "ImageTextClassificationPipeline"]
