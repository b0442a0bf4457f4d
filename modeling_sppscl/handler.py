"""Inference Endpoints handler of an SPP-SCL repository (saved next to the model as `handler.py`).

Request: `{"inputs": {"image": <base64 string or raw bytes>, "text": str}}`, or a list of such inputs under
`"inputs"`, optionally with `"parameters": {"top_k": int, "batch_size": int}`. Response: for each input, the
labels with their probabilities, best first (a single input gets a single list). A bad request gets
`{"error": <what is wrong>, "status": 400}`; nothing raises.

Only transformers is imported: the model, processor and pipeline come from the repository's own code
(`trust_remote_code=True`), so the endpoint does not need the `sppscl` package.
"""

import base64
import binascii
import io
import logging
from pathlib import Path
from typing import Any

import PIL.Image
from transformers import pipeline


TASK = "image-text-classification"
PARAMETERS = ("top_k", "batch_size")
logger = logging.getLogger(__name__)


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


def decode_image(image: Any, index: int) -> PIL.Image.Image:
    """The RGB image encoded in a request's `image` field."""
    raw = _image_bytes(image, index)
    try:
        with PIL.Image.open(io.BytesIO(raw)) as opened:
            return opened.convert("RGB")
    except (OSError, PIL.UnidentifiedImageError) as error:
        raise ValueError(f"input {index}: 'image' does not decode to an image ({error})") from error


def _pipeline_input(item: Any, index: int) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise ValueError(f"input {index}: expected an object with 'image' and 'text', got {type(item).__name__}")
    if item.get("image") is None:
        raise ValueError(f"input {index}: missing 'image'")
    # Strings are always base64 here: an endpoint must not open files named by its callers.
    return {**item, "image": decode_image(item["image"], index)}


def parse_request(data: Any) -> tuple[dict[str, Any] | list[dict[str, Any]], dict[str, Any]]:
    """The pipeline inputs and parameters of a request body."""
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

    def __call__(self, data: dict[str, Any]) -> list | dict:
        try:
            inputs, parameters = parse_request(data)
            return self.classifier(inputs, **parameters)
        except ValueError as error:
            return {"error": str(error), "status": 400}
        except Exception as error:  # noqa: BLE001 - an endpoint answers every request rather than crash
            logger.exception("SPP-SCL endpoint failed on a request")
            return {"error": f"internal error: {error}", "status": 500}
