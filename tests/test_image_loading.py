"""`load_image`: every PIL mode to RGB against a brute-force expectation, limits before decoding, reduced size."""

import io

import numpy as np
import PIL.Image
import pytest

from modeling_sppscl.image_utils_sppscl import ImageLimitError, image_size, load_image


def encoded(image: PIL.Image.Image, format: str, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **kwargs)
    return buffer.getvalue()


def pixels(image: PIL.Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


def grey_rgb(values) -> np.ndarray:
    return np.repeat(np.asarray(values, dtype=int)[..., None], 3, axis=-1)


def over_white(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Brute force: each channel c with alpha a over the white background is c*a/255 + 255*(1 - a/255)."""
    return np.rint(colour * alpha[..., None] / 255 + 255.0 * (1 - alpha[..., None] / 255)).astype(int)


SIXTEEN_BIT = np.array([[0, 1, 128, 129, 257, 1000], [32767, 32768, 40000, 65000, 65534, 65535]], dtype=np.uint16)
# round(v * 255 / 65535): the 16-bit range onto the 8-bit one, as opposed to clipping at 255.
SIXTEEN_BIT_EXPECTED = np.rint(SIXTEEN_BIT.astype(float) * 255 / 65535).astype(int)


@pytest.mark.parametrize("mode, dtype", [("I;16", "<u2"), ("I;16B", ">u2"), ("I;16L", "<u2")])
def test_sixteen_bit_modes_are_scaled_not_clipped(mode, dtype):
    image = PIL.Image.frombytes(mode, (6, 2), SIXTEEN_BIT.astype(dtype).tobytes())
    assert np.asarray(image).astype(int).tolist() == SIXTEEN_BIT.astype(int).tolist()  # the test image is what we think
    assert pixels(load_image(image)).tolist() == grey_rgb(SIXTEEN_BIT_EXPECTED).tolist()


def test_sixteen_bit_png_file_is_scaled():
    data = encoded(PIL.Image.frombytes("I;16", (6, 2), SIXTEEN_BIT.astype("<u2").tobytes()), "PNG")
    assert PIL.Image.open(io.BytesIO(data)).mode in ("I;16", "I")
    assert pixels(load_image(data)).tolist() == grey_rgb(SIXTEEN_BIT_EXPECTED).tolist()


def test_mode_i_and_f():
    as_int = PIL.Image.fromarray(SIXTEEN_BIT.astype(np.int32))
    assert as_int.mode == "I" and pixels(load_image(as_int)).tolist() == grey_rgb(SIXTEEN_BIT_EXPECTED).tolist()
    wide = np.array([[-1000, 0, 1000, 3000]], dtype=np.int32)  # outside 0..65535: stretched over min..max
    assert pixels(load_image(PIL.Image.fromarray(wide)))[..., 0].tolist() == [[0, 64, 128, 255]]
    unit = np.array([[0.0, 0.25, 0.5, 1.0]], dtype=np.float32)
    assert pixels(load_image(PIL.Image.fromarray(unit)))[..., 0].tolist() == [[0, 64, 128, 255]]
    other = np.array([[-2.0, 0.0, 2.0, np.nan]], dtype=np.float32)
    assert pixels(load_image(PIL.Image.fromarray(other)))[..., 0].tolist() == [[0, 128, 255, 128]]


def test_one_bit_grey_and_palette():
    bits = PIL.Image.fromarray(np.array([[0, 255, 255, 0]], dtype=np.uint8)).convert("1")
    assert pixels(load_image(bits)).tolist() == grey_rgb([[0, 255, 255, 0]]).tolist()
    grey = np.array([[0, 17, 200, 255]], dtype=np.uint8)
    assert pixels(load_image(PIL.Image.fromarray(grey))).tolist() == grey_rgb(grey).tolist()
    palette = PIL.Image.new("P", (3, 1))
    palette.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90])
    palette.putdata([0, 1, 2])
    assert pixels(load_image(palette)).tolist() == [[[10, 20, 30], [40, 50, 60], [70, 80, 90]]]


def test_transparency_is_composited_on_white():
    colour = np.array([[[255, 0, 0], [0, 0, 255], [10, 200, 30], [0, 0, 0]]], dtype=np.uint8)
    alpha = np.array([[255, 0, 128, 64]], dtype=np.uint8)
    rgba = PIL.Image.fromarray(np.dstack([colour, alpha]), mode="RGBA")
    expected = over_white(colour.astype(float), alpha.astype(float))
    for image in (rgba, PIL.Image.open(io.BytesIO(encoded(rgba, "PNG")))):
        assert np.abs(pixels(load_image(image)) - expected).max() <= 1
    assert np.abs(pixels(load_image(rgba.convert("RGBa"))) - expected).max() <= 2  # premultiplied loses precision
    grey, grey_alpha = np.array([[0, 100, 200]], dtype=np.uint8), np.array([[0, 128, 255]], dtype=np.uint8)
    la = PIL.Image.fromarray(np.dstack([grey, grey_alpha]), mode="LA")
    expected_la = over_white(grey_rgb(grey).astype(float), grey_alpha.astype(float))
    assert np.abs(pixels(load_image(la)) - expected_la).max() <= 1
    assert np.abs(pixels(load_image(la.convert("La"))) - expected_la).max() <= 2


def test_palette_with_transparent_index_and_rgb_with_transparent_colour():
    palette = PIL.Image.new("P", (3, 1))
    palette.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90])
    palette.putdata([0, 1, 2])
    palette.info["transparency"] = 1
    assert pixels(load_image(palette)).tolist() == [[[10, 20, 30], [255, 255, 255], [70, 80, 90]]]
    reopened = PIL.Image.open(io.BytesIO(encoded(palette, "PNG")))
    assert pixels(load_image(reopened)).tolist() == [[[10, 20, 30], [255, 255, 255], [70, 80, 90]]]
    rgb = PIL.Image.fromarray(np.array([[[1, 2, 3], [9, 9, 9]]], dtype=np.uint8))
    data = encoded(rgb, "PNG", transparency=(9, 9, 9))
    assert pixels(load_image(data)).tolist() == [[[1, 2, 3], [255, 255, 255]]]


@pytest.mark.parametrize("mode, value, expected", [
    ("CMYK", (0, 255, 255, 0), (255, 0, 0)),
    ("CMYK", (0, 0, 0, 255), (0, 0, 0)),
    ("YCbCr", (76, 85, 255), (254, 0, 0)),
    ("HSV", (0, 255, 255), (255, 0, 0)),
    ("LAB", (255, 128, 128), (254, 255, 254)),
    ("RGBX", (1, 2, 3, 0), (1, 2, 3)),
])
def test_other_colour_spaces(mode, value, expected):
    assert pixels(load_image(PIL.Image.new(mode, (2, 2), value)))[0, 0].tolist() == list(expected)


def test_cmyk_jpeg_file():
    data = encoded(PIL.Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=100)
    assert np.abs(pixels(load_image(data))[8, 8] - [255, 0, 0]).max() <= 3


def test_limits_are_checked_from_the_header_before_decoding(tmp_path):
    # A PNG that declares 9000 x 9000 pixels in a few kilobytes: decoding it to RGB would take 240 MB.
    path = tmp_path / "bomb.png"
    path.write_bytes(encoded(PIL.Image.new("1", (9000, 9000)), "PNG"))
    assert path.stat().st_size < 100_000
    with pytest.raises(ImageLimitError, match=r"bomb.png has 9000 x 9000 = 81,000,000 pixels.*max_pixels=64,000,000.*larger max_pixels"):
        load_image(path)
    with pytest.raises(ImageLimitError, match="max_pixels"):
        image_size(path)
    with pytest.raises(ImageLimitError, match="max_pixels=100"):
        load_image(encoded(PIL.Image.new("RGB", (20, 20)), "PNG"), name="upload 3", max_pixels=100)
    assert load_image(encoded(PIL.Image.new("RGB", (20, 20)), "PNG"), max_pixels=400).size == (20, 20)
    assert issubclass(ImageLimitError, ValueError)  # callers that catch ValueError (the handler's 400) catch it


def test_aspect_ratio_limit_and_no_limit():
    strip = encoded(PIL.Image.new("L", (3000, 10)), "PNG")
    with pytest.raises(ImageLimitError, match=r"upload 1 is 3000 x 10 pixels.*max_aspect_ratio=50.*larger max_aspect_ratio"):
        load_image(strip, name="upload 1")
    assert load_image(strip, max_aspect_ratio=None).size == (3000, 10)
    assert load_image(strip, max_aspect_ratio=300).size == (3000, 10)
    with pytest.raises(ImageLimitError):
        load_image(np.zeros((1, 60), dtype=np.uint8))


def test_decompression_bomb_error_becomes_the_limit_error(tmp_path):
    path = tmp_path / "huge.png"
    path.write_bytes(encoded(PIL.Image.new("1", (20000, 20000)), "PNG"))  # over twice PIL.Image.MAX_IMAGE_PIXELS
    with pytest.raises(ImageLimitError, match="huge.png is over PIL's decompression-bomb limit.*MAX_IMAGE_PIXELS"):
        load_image(path, max_pixels=None)


def test_reduced_size_decodes_small_and_catches_truncation(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, size=(400, 300, 3), dtype=np.uint8)
    jpeg = encoded(PIL.Image.fromarray(noise), "JPEG")
    assert load_image(jpeg).size == (300, 400)
    assert load_image(jpeg, reduced_size=40).size == (75, 100)  # 1/4 scale by draft mode (1/8 would go under 40)
    assert load_image(jpeg, reduced_size=1).size == (1, 2)
    assert load_image(jpeg, reduced_size=100).size == (150, 200)  # the shorter side stays >= 100
    png = encoded(PIL.Image.fromarray(noise), "PNG")
    assert load_image(png, reduced_size=100).size == (100, 134)  # reduced by the integer factor 3 (PIL rounds up)
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(jpeg[: len(jpeg) // 2])
    assert image_size(truncated) == (300, 400)  # the header alone does not show it
    with pytest.raises(ValueError, match="cut.jpg.*truncated"):
        load_image(truncated, reduced_size=1)
    with pytest.raises(ValueError, match="reduced_size"):
        load_image(jpeg, reduced_size=0)


def test_errors_name_the_image(tmp_path):
    with pytest.raises(ValueError, match="row 'a7'.*no image file at .*gone.jpg"):
        load_image(tmp_path / "gone.jpg", name="row 'a7'")
    with pytest.raises(ValueError, match=r"cannot read image bytes: UnidentifiedImageError"):
        load_image(b"not an image")
    with pytest.raises(ValueError, match="expected a PIL image"):
        load_image(12)
