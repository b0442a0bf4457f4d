"""Inference Endpoints handler of an SPP-SCL repository (saved next to the model as `handler.py`).

Request: `{"inputs": {"image": <base64 string or raw bytes>, "text": str}}`, or a list of such inputs under
`"inputs"`, optionally with `"parameters": {"top_k": int, "batch_size": int}`. Response: for each input, the
labels with their probabilities, best first (a single input gets a single list). A bad request raises a
`ValueError` saying which input is wrong and how: the Hugging Face Inference Toolkit answers an exception raised by
the handler with HTTP 400 and `{"error": <message>}` (a returned body would go out as 200).

Images are decoded once, at reduced size, by the pipeline (through the repository's one image opener,
`image_utils_sppscl.load_image`), under the limits saved with the processor: an image over its pixel or
aspect-ratio limit is refused from the header, before decoding, and a decompression bomb as well; texts are cut to
`max_text_characters` before tokenizing, and a text with nothing to read is refused. A client cannot lift a limit.

Only transformers and the standard library are imported: the model, processor and pipeline come from the
repository's own code (`trust_remote_code=True`), so the endpoint does not need the `sppscl` package.
"""

import base64
import binascii
from pathlib import Path
from typing import Any

from transformers import pipeline


TASK = "image-text-classification"
PARAMETERS = ("top_k", "batch_size")


def _image_bytes(image: Any, index: int) -> bytes:
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if not isinstance(image, str):
        raise ValueError(f"input {index}: 'image' must be a base64 string or bytes, got {type(image).__name__}")
    # Accept data URLs ("data:image/png;base64,...") as browsers produce them.
    encoded = image.split(",", 1)[1] if image.startswith("data:") else image
    try:
        return base64.b64decode(encoded, validate=True)
    except binascii.Error as error:
        raise ValueError(f"input {index}: 'image' is not valid base64 ({error})") from error


def _pipeline_input(item: Any, index: int) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ValueError(f"input {index}: expected an object with 'image' and 'text', got {type(item).__name__}")
    if item.get("image") is None:
        raise ValueError(f"input {index}: missing 'image'")
    # Strings are always base64 here: an endpoint must not open files named by its callers. The bytes are decoded
    # by the pipeline, under its image limits.
    return {**item, "image": _image_bytes(item["image"], index)}


def parse_request(data: Any) -> tuple[dict[str, Any] | list[dict[str, Any]], dict[str, Any]]:
    """The pipeline inputs (images as encoded bytes) and parameters of a request body."""
    if not isinstance(data, dict) or "inputs" not in data:
        raise ValueError('the request must be an object with "inputs": {"image": <base64>, "text": <string>} or a list of them')
    inputs, parameters = data["inputs"], data.get("parameters") or {}
    if not isinstance(parameters, dict) or set(parameters) - set(PARAMETERS):
        raise ValueError(f'"parameters" must be an object with keys among {list(PARAMETERS)}, got {parameters!r}')
    if isinstance(inputs, list):
        if not inputs:
            raise ValueError('"inputs" is an empty list')
        return [_pipeline_input(item, index) for index, item in enumerate(inputs)], parameters
    return _pipeline_input(inputs, 0), parameters


class EndpointHandler:
    """The handler Inference Endpoints instantiate with the repository folder and call with each request body."""

    def __init__(self, path: str = ""):
        folder = path or str(Path(__file__).resolve().parent)
        self.classifier = pipeline(TASK, model=folder, trust_remote_code=True)

    def __call__(self, data: dict[str, Any]) -> list:
        """The scores of the request's inputs; a bad request raises a `ValueError` (HTTP 400 from the toolkit)."""
        inputs, parameters = parse_request(data)
        return self.classifier(inputs, **parameters)
