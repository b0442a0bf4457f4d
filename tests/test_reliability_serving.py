"""Hostile requests to the Inference Endpoints handler and the pipeline: every one raises a `ValueError` that names
the input and the problem (the Inference Toolkit answers it with 400), none decodes an oversized image. Then every
bad input through each way of serving (processor + model, pipeline, handler, Space): a `ValueError` (`gr.Error` in
the Space) with its reason, never an error from inside the model; large inputs cost what a small one does.

The corpus is generated here: image headers written byte by byte (a ~70-byte PNG can declare 10^10 pixels).
"""

import base64
import importlib.util
import io
import math
import re
import resource
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
import PIL.Image
import pytest
import torch

from modeling_sppscl import SppSclProcessor
from modeling_sppscl.image_utils_sppscl import decode_size
from test_hub import TEXT, assert_same_ranking, export  # noqa: F401 (export is a fixture)
from conftest import auto_classes_restored


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
    with auto_classes_restored():
        yield module.EndpointHandler(path=str(export.folder))


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


# ----- every bad input, through every way of serving: processor + model, pipeline, handler, Space ---------------
SURFACES = ("processor+model", "pipeline", "handler", "space")
HUGE_SIDE = 7999
COLOUR = (40, 120, 200)


def single_colour_png(side: int, colour=COLOUR) -> bytes:
    """A `side` x `side` RGB PNG of one colour, written row by row (never held decoded): ~0.9 MB for 7999."""
    row = b"\x00" + bytes(colour) * side
    compressor = zlib.compressobj(1)
    data = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()

    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))

    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


CORRUPT_PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
EMPTY_HEADER = png_declaring(0, 0)  # what a 0 x 0 image is as a file: PIL does not identify it


@dataclass(frozen=True)
class BadInput:
    image: object  # None: no image
    text: object
    message: str  # a regex that the error of every surface matches...
    by_surface: dict = field(default_factory=dict)  # ...but those that word it their own way


NO_IMAGE_TEXT = {"space": "Type the text that goes with the image"}
BAD_INPUTS = {
    "empty_text": BadInput("good", "", "is empty", NO_IMAGE_TEXT),
    "blank_text": BadInput("good", " \n\t ", "is empty", NO_IMAGE_TEXT),
    "zero_width_spaces": BadInput("good", "\u200b\u200b", "has only invisible characters"),
    "nul_characters": BadInput("good", "\x00\x00", "has only invisible characters"),
    "replacement_characters": BadInput("good", "\ufffd \ufffd", "has only invisible characters"),
    "special_tokens_only": BadInput("good", "[SEP] [PAD]", "has no token the tokenizer knows but its special tokens"),
    "stripped_accents_only": BadInput("good", "\u0301\u0301", "has no token the tokenizer knows but its special tokens"),
    "0x0_pil_image": BadInput(PIL.Image.new("RGB", (0, 0)), TEXT, r"is empty \(0 x 0 pixels\)", {"handler": "cannot read image"}),
    "0x0_array": BadInput(np.zeros((0, 0, 3), dtype=np.uint8), TEXT, r"is empty \(0 x 0 pixels\)", {"handler": "cannot read image"}),
    "16x0_array": BadInput(np.zeros((0, 16), dtype=np.uint8), TEXT, r"is empty \(16 x 0 pixels\)", {"handler": "cannot read image"}),
    "float_array": BadInput(np.zeros((8, 8, 3), dtype=np.float32), TEXT, "must be uint8", {"handler": None}),
    "corrupt_bytes": BadInput(CORRUPT_PNG, TEXT, "cannot read image"),
    "url": BadInput("https://example.com/cat.png", TEXT, "URLs are not fetched", {"handler": "not valid base64"}),
    "text_a_number": BadInput("good", 5, "must be a string.*got int", NO_IMAGE_TEXT),
    "text_a_dict": BadInput("good", {"text": "good"}, "must be a string.*got dict", NO_IMAGE_TEXT),
    "image_a_number": BadInput(5, TEXT, "PIL image.*got int", {"handler": "must be a base64 string or bytes, got int"}),
    "missing_image": BadInput(None, TEXT, "missing 'image'", {"processor+model": "needs the image", "space": "Upload an image"}),
}


def encoded(image) -> str:
    """The image as the handler takes it (base64 of its file), a 0 x 0 image as the header such a file would have."""
    if isinstance(image, np.ndarray):
        image = PIL.Image.fromarray(image)
    if isinstance(image, PIL.Image.Image):
        if 0 in image.size:
            return b64(EMPTY_HEADER)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        image = buffer.getvalue()
    return b64(image) if isinstance(image, bytes) else image


@pytest.fixture(scope="module")
def space_app(export, tmp_path_factory):  # noqa: F811
    """The Space's `app.py`, written for the exported model and imported as the Space runs it."""
    pytest.importorskip("gradio", reason="the Space needs gradio: pip install '.[space]'")
    from modeling_sppscl.hub.space import write_space

    labels = [export.model.config.id2label[index] for index in sorted(export.model.config.id2label)]
    folder = write_space(tmp_path_factory.mktemp("space") / "space", str(export.folder), labels, "SPP-SCL test", None)
    spec = importlib.util.spec_from_file_location("space_app_under_test", folder / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Surfaces:
    """The four ways of serving the exported model; `run` gives the scores (label -> probability) of one pair."""

    def __init__(self, export, handler, space_app):  # noqa: F811
        from transformers import pipeline

        self.export, self.handler, self.space_app = export, handler, space_app
        self.classify = pipeline("image-text-classification", model=export.model, processor=export.processor, device="cpu")
        self.good_image = export.image_path.read_bytes()

    def processor(self, surface: str):
        """The processor behind `surface` (the handler and the Space load theirs as remote code)."""
        owner = {"handler": self.handler.classifier, "space": self.space_app.classifier}.get(surface, self.export)
        return owner.processor

    def run(self, surface: str, image, text) -> dict[str, float]:
        image = self.good_image if isinstance(image, str) and image == "good" else image
        if surface == "processor+model":
            with torch.no_grad():
                logits = self.export.model(**self.export.processor(images=image, text=text)).logits[0]
            return dict(zip(self.export.model.config.id2label.values(), logits.softmax(dim=-1).tolist()))
        if surface == "space":
            return self.space_app.classify(image, text)
        if surface == "pipeline":
            ranking = self.classify({"image": image, "text": text})
        else:
            ranking = self.handler({"inputs": {"text": text} if image is None else {"image": encoded(image), "text": text}})
        return {entry["label"]: entry["score"] for entry in ranking}


@pytest.fixture(scope="module")
def surfaces(export, handler, space_app):  # noqa: F811
    return Surfaces(export, handler, space_app)


def assert_same_scores(found: dict[str, float], expected: dict[str, float]) -> None:
    assert found.keys() == expected.keys()
    np.testing.assert_allclose([found[label] for label in expected], list(expected.values()), atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "case, surface",
    [(case, surface) for case in BAD_INPUTS for surface in SURFACES if BAD_INPUTS[case].by_surface.get(surface, "") is not None],
)
def test_bad_input_is_refused_with_its_reason_by_every_surface(surfaces, case, surface):
    bad = BAD_INPUTS[case]
    with pytest.raises(surfaces.space_app.gr.Error if surface == "space" else ValueError) as error:
        surfaces.run(surface, bad.image, bad.text)
    message = error.value.message if surface == "space" else str(error.value)
    assert re.search(bad.by_surface.get(surface, bad.message), message), message


@pytest.fixture(scope="module")
def huge_png() -> bytes:
    return single_colour_png(HUGE_SIDE)


@pytest.mark.parametrize("surface", SURFACES)
def test_huge_png_is_decoded_once_at_reduced_size_and_scored_as_a_small_one(surfaces, huge_png, surface, monkeypatch):
    """7999 x 7999 pixels in 0.9 MB: the file is opened once, the image processor gets it shrunk to the decode
    size (not 64 M pixels to turn into floats), and the scores are those of a small image of the same colour."""
    expected = surfaces.run(surface, single_colour_png(300), TEXT)
    opened, seen = [], []
    open_image = PIL.Image.open
    monkeypatch.setattr(PIL.Image, "open", lambda *args, **kwargs: opened.append(args) or open_image(*args, **kwargs))
    image_processor = surfaces.processor(surface).image_processor
    preprocess = type(image_processor).preprocess
    monkeypatch.setattr(type(image_processor), "preprocess", lambda self, images, *args, **kwargs: seen.extend(images) or preprocess(self, images, *args, **kwargs))
    scores = surfaces.run(surface, huge_png, TEXT)
    factor = HUGE_SIDE // decode_size(image_processor)  # the largest that keeps the side at least the decode size
    assert len(opened) == 1
    assert [image.size for image in seen] == [(math.ceil(HUGE_SIDE / factor),) * 2]
    assert_same_scores(scores, expected)


@pytest.mark.parametrize("surface", SURFACES)
def test_20_mb_text_is_cut_to_max_text_characters_before_tokenizing(surfaces, surface, monkeypatch):
    text = ("good day the cat " * 1_200_000)[:20_000_000]
    cap = surfaces.processor(surface).max_text_characters
    expected = surfaces.run(surface, "good", text[:cap])
    tokenizer_class = type(surfaces.processor(surface).tokenizer)
    tokenize = tokenizer_class.__call__
    longest = []
    monkeypatch.setattr(tokenizer_class, "__call__", lambda self, texts, *args, **kwargs: longest.append(max(map(len, [texts] if isinstance(texts, str) else texts))) or tokenize(self, texts, *args, **kwargs))
    scores = surfaces.run(surface, "good", text)
    assert cap == 10_000 and longest and max(longest) == cap
    assert_same_scores(scores, expected)


def test_limits_are_saved_with_the_processor_and_lifted_per_call(export, tmp_path):  # noqa: F811
    from transformers import AutoModel, AutoProcessor, pipeline

    folder = tmp_path / "limited"
    export.model.save_pretrained(folder)
    processor = export.processor
    SppSclProcessor(processor.image_processor, processor.tokenizer, max_pixels=100, max_aspect_ratio=1.1, max_text_characters=6).save_pretrained(folder)
    # The installed package's classes: loading remote code in-process would re-register the Auto classes for the
    # rest of the session (the remote-code path is tested in fresh processes in test_tower_families.py).
    reloaded = AutoProcessor.from_pretrained(folder)
    assert reloaded.max_pixels == 100
    classify = pipeline("image-text-classification", model=AutoModel.from_pretrained(folder), processor=reloaded, device="cpu")
    pair = {"image": export.image_path.read_bytes(), "text": TEXT}
    with pytest.raises(ValueError, match=r"input 0: image bytes has 64 x 50 = 3,200 pixels, over the limit max_pixels=100"):
        classify(pair)
    with pytest.raises(ValueError, match=r"input 0: image bytes is 64 x 50 pixels, an aspect ratio over the limit max_aspect_ratio=1.1"):
        classify(pair, max_pixels=None)
    lifted = {"max_pixels": None, "max_aspect_ratio": None, "max_text_characters": None}
    assert_same_ranking(classify(pair, **lifted), export.ranking)
    capped = classify(pair, max_pixels=None, max_aspect_ratio=None)  # the text cut to 6 characters: "a very"
    assert_same_ranking(capped, classify({**pair, "text": TEXT[:6]}, **lifted))
    with pytest.raises(ValueError, match="max_text_characters must be a positive integer or None"):
        classify(pair, max_text_characters=0)


def test_model_refuses_unknown_arguments_and_texts_without_tokens(export):  # noqa: F811
    inputs = export.processor(images=[PIL.Image.open(export.image_path)] * 2, text=[TEXT, "good"])
    with pytest.raises(TypeError, match="num_items_in_batch"):
        export.model(**inputs, num_items_in_batch=2)
    inputs["attention_mask"][1, 2:] = 0  # the second text: its summary and separator tokens only
    with pytest.raises(ValueError, match=r"text\(s\) \[1\] of the batch have no token between the summary and separator tokens"):
        export.model(**inputs)
