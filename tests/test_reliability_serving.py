"""Hostile requests to the Inference Endpoints handler and the pipeline: every one raises a `ValueError` that names
the input and the problem (the Inference Toolkit answers it with 400), none decodes an oversized image.

The corpus is generated here: image headers written byte by byte (a ~70-byte PNG can declare 10^10 pixels).
"""

import base64
import importlib.util
import io
import resource
import struct
import zlib

import numpy as np
import PIL.Image
import pytest

from test_hub import TEXT, assert_same_ranking, export  # noqa: F401 (export is a fixture)


def png_declaring(width: int, height: int, pixel_rows: bytes = b"") -> bytes:
    """A PNG whose header declares `width` x `height` RGB pixels, with `pixel_rows` (deflated) as its only data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(pixel_rows)) + chunk(b"IEND", b"")


def gif_declaring(width: int, height: int) -> bytes:
    """A GIF header declaring a `width` x `height` screen and image, with no image data."""
    screen = b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0)
    return screen + b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x00\x3b"


def bmp_declaring(width: int, height: int) -> bytes:
    """A BMP header (24-bit) declaring `width` x `height` pixels, with no pixel data."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + len(info), 0, 0, 14 + len(info)) + info


def encoded_jpeg(size=(40, 48)) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (*size, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# case -> (request, text its error must contain)
def hostile_requests() -> dict[str, tuple[object, str]]:
    jpeg = encoded_jpeg()
    good = {"image": b64(jpeg), "text": TEXT}
    return {
        "png_declaring_10^10_pixels": ({"inputs": {"image": b64(png_declaring(100_000, 100_000)), "text": TEXT}}, "decompression-bomb"),
        "png_declaring_81M_pixels": ({"inputs": {"image": b64(png_declaring(9_000, 9_000)), "text": TEXT}}, "max_pixels"),
        "png_200_to_1": ({"inputs": {"image": b64(png_declaring(20_000, 100)), "text": TEXT}}, "max_aspect_ratio"),
        "gif_declaring_4G_pixels": ({"inputs": {"image": b64(gif_declaring(65_535, 65_535)), "text": TEXT}}, "decompression-bomb"),
        "bmp_declaring_2.5G_pixels": ({"inputs": {"image": b64(bmp_declaring(50_000, 50_000)), "text": TEXT}}, "decompression-bomb"),
        "huge_png_as_data_url": (
            {"inputs": {"image": "data:image/png;base64," + b64(png_declaring(9_000, 9_000)), "text": TEXT}}, "max_pixels"
        ),
        "huge_png_second_in_list": (
            {"inputs": [good, {"image": b64(png_declaring(9_000, 9_000)), "text": TEXT}]}, "input 1: image"
        ),
        "truncated_jpeg": ({"inputs": {"image": b64(jpeg[: len(jpeg) // 2]), "text": TEXT}}, "input 0: cannot read image"),
        "truncated_png": ({"inputs": {"image": b64(png_declaring(4, 4, b"\x00" * 7)), "text": TEXT}}, "input 0: cannot read image"),
        "empty_image": ({"inputs": {"image": "", "text": TEXT}}, "input 0: cannot read image"),
        "zero_width_text": ({"inputs": {"image": b64(jpeg), "text": "\u200b\u200b"}}, "input 0: 'text' has only invisible characters"),
        "control_character_text": ({"inputs": {"image": b64(jpeg), "text": "\x00\x07"}}, "'text' has only invisible characters"),
        "text_not_a_string": ({"inputs": {"image": b64(jpeg), "text": 5}}, "'text' must be a string"),
        "image_a_number": ({"inputs": {"image": 5, "text": TEXT}}, "'image' must be a base64 string or bytes"),
        "inputs_a_string": ({"inputs": TEXT}, "expected an object with 'image' and 'text'"),
        "inputs_an_image_body": ({"inputs": PIL.Image.new("RGB", (4, 4))}, "expected an object with 'image' and 'text'"),
        "request_a_list": ([good], 'must be an object with "inputs"'),
        "client_lifts_the_pixel_limit": ({"inputs": good, "parameters": {"max_pixels": None}}, '"parameters" must be'),
        "parameters_a_list": ({"inputs": good, "parameters": [1]}, '"parameters" must be'),
        "top_k_a_string": ({"inputs": good, "parameters": {"top_k": "3"}}, "top_k must be a positive integer"),
    }


@pytest.fixture(scope="module")
def handler(export):  # noqa: F811
    """The saved folder's `handler.py`, loaded as Inference Endpoints load it: as a file."""
    spec = importlib.util.spec_from_file_location("saved_endpoint_handler", export.folder / "handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EndpointHandler(path=str(export.folder))


def test_handler_still_scores_good_requests(export, handler):  # noqa: F811
    answer = handler({"inputs": {"image": b64(export.image_path.read_bytes()), "text": TEXT}})
    assert_same_ranking(answer, export.ranking)


@pytest.mark.parametrize("case", sorted(hostile_requests()))
def test_hostile_request_raises_a_value_error_naming_the_problem(handler, case):
    request, message = hostile_requests()[case]
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError) as error:
        handler(request)
    assert message in str(error.value), str(error.value)
    # The oversized images are refused from their headers: no decoding (100,000^2 RGB pixels would be 30 GB).
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mib < 500, f"peak memory grew by {grown_mib:.0f} MiB"


def test_pipeline_passes_its_image_limits_to_load_image(export):  # noqa: F811
    from transformers import pipeline

    classify = pipeline("image-text-classification", model=export.model, processor=export.processor, device="cpu")
    pair = {"image": export.image_path.read_bytes(), "text": TEXT}
    with pytest.raises(ValueError, match="input 0: .*max_pixels"):
        classify(pair, max_pixels=100)
    with pytest.raises(ValueError, match="input 0: .*max_aspect_ratio"):
        classify(pair, max_aspect_ratio=1.0)
    assert_same_ranking(classify(pair, max_pixels=None, max_aspect_ratio=None), export.ranking)
