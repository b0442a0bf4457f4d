"""`image-text-classification`: a transformers pipeline that scores the labels of image-text pairs."""

import os
from typing import Any

import numpy as np
import PIL.Image
from transformers import AutoModel, Pipeline
from transformers.feature_extraction_utils import BatchFeature
from transformers.pipelines import PIPELINE_REGISTRY

from .processing_sppscl import LIMITS, text_problems
from .remote_code_sppscl import PIPELINE_TASK


INPUT_KEYS = ("image", "text")
IMAGE_TYPES = (PIL.Image.Image, np.ndarray, str, os.PathLike, bytes, bytearray)


def _pair_problem(pair: Any) -> str | None:
    if not isinstance(pair, dict):
        return f"expected a dict with keys 'image' and 'text', got {type(pair).__name__}"
    missing = [key for key in INPUT_KEYS if pair.get(key) is None]
    if missing:
        return f"missing {' and '.join(repr(key) for key in missing)}"
    unexpected = sorted(set(pair) - set(INPUT_KEYS))
    if unexpected:
        return f"unexpected keys {unexpected} (an input has only 'image' and 'text')"
    if not isinstance(pair["text"], str):
        return f"'text' must be a string, got {type(pair['text']).__name__}"
    if not isinstance(pair["image"], IMAGE_TYPES):
        return (
            f"'image' must be a PIL image, a path or a uint8 numpy array, got {type(pair['image']).__name__} "
            "(encoded image bytes are taken too)"
        )
    return None


def checked_pair(pair: Any, index: int, processor, limits: dict[str, Any]) -> dict[str, Any]:
    """The input `pair` with its text cut to `max_text_characters` and its image decoded (once, at reduced size,
    under `max_pixels` and `max_aspect_ratio`), or a `ValueError` naming the position and the problem; every
    input of a call is checked so before any inference runs. The text is judged by `text_problems`, the rule
    that training data follow too."""
    problem = _pair_problem(pair)
    if problem is None:
        text = pair["text"][: limits["max_text_characters"]]
        text_problem = text_problems([text], processor.tokenizer).get(0)
        if text_problem is not None:
            problem = f"'text' {text_problem}"
    if problem is None:
        try:
            return {"image": processor.load_images(pair["image"], **limits)[0], "text": text}
        except ValueError as error:
            problem = str(error)
    raise ValueError(f"{PIPELINE_TASK} input {index}: {problem}")


class ImageTextClassificationPipeline(Pipeline):
    """Label scores for image-text pairs with an SPP-SCL model.

    Inputs are `{"image": PIL image | path | uint8 numpy array | encoded bytes, "text": str}` or a list of them; each gets a list
    of `{"label", "score"}` (softmax probabilities), best first. `top_k` keeps that many labels (all by default).
    `batch_size` groups pairs into one forward pass: with the paper variant, whose fusion attends across the batch,
    a pair's scores then depend on its batch-mates. `max_pixels`, `max_aspect_ratio` and `max_text_characters`
    override the processor's limits for a call (None lifts one); each image is decoded once, under them.

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
        limits = self.processor.pop_limits(kwargs)
        if isinstance(inputs, dict):
            return super().__call__(checked_pair(inputs, 0, self.processor, limits), **kwargs)
        if not isinstance(inputs, (list, tuple)):
            raise ValueError(
                f"image-text-classification expects a dict {{'image': ..., 'text': ...}} or a list of them, got {type(inputs).__name__}"
            )
        if not inputs:
            return []
        return super().__call__([checked_pair(pair, index, self.processor, limits) for index, pair in enumerate(inputs)], **kwargs)

    def _sanitize_parameters(self, top_k: int | None = None, **unexpected) -> tuple[dict, dict, dict]:
        if unexpected:
            raise TypeError(
                f"image-text-classification got unexpected parameters {sorted(unexpected)} (it takes top_k, batch_size, "
                f"{', '.join(LIMITS)})"
            )
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive integer or None (all labels), got {top_k!r}")
        return {}, {}, ({"top_k": top_k} if top_k is not None else {})

    def preprocess(self, pair: dict[str, Any]) -> BatchFeature:
        # `checked_pair` applied the call's limits and decoded the image: the processor takes the pair as it is.
        features = self.processor(images=pair["image"], text=pair["text"], return_tensors="pt", **dict.fromkeys(LIMITS))
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


# `pipeline(..., trust_remote_code=True)` imports the saved copy of this file on every call: register the task once,
# instead of warning at each call that it is being overwritten (every copy holds the same class).
if PIPELINE_TASK not in PIPELINE_REGISTRY.get_supported_tasks():
    PIPELINE_REGISTRY.register_pipeline(
        PIPELINE_TASK, pipeline_class=ImageTextClassificationPipeline, pt_model=AutoModel, type="multimodal"
    )

__all__ = ["ImageTextClassificationPipeline"]
