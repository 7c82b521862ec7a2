"""sensor_msgs images -> numpy: the pixel limit (checked before converting or decoding, and
fast), and conversions within it unchanged."""
import struct
import time
import warnings
import zlib

import cv2
import numpy as np
import pytest

pytest.importorskip("rclpy")

from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from ivtuning_ros.ros.conversions import (  # noqa: E402
    ImageError,
    compressed_to_array,
    fill_image,
    ir_from_compressed,
    ir_from_image,
    rgb_from_compressed,
    rgb_from_image,
)

LIMIT = 4096 * 4096
HUGE = (8192, 8192)
MAX_REFUSAL_S = 0.05


def image(array: np.ndarray, encoding: str) -> Image:
    msg = Image()
    fill_image(msg, array, encoding)
    return msg


def compressed(data: bytes, fmt: str) -> CompressedImage:
    msg = CompressedImage()
    msg.format, msg.data = fmt, data
    return msg


def encoded(extension: str, array: np.ndarray) -> bytes:
    ok, buffer = cv2.imencode(extension, array)
    assert ok
    return buffer.tobytes()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares width x height (8-bit grey) and holds no pixel data."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b""))
            + chunk(b"IEND", b""))


def best_refusal_time(convert, msg, max_pixels: int) -> float:
    """Best of three timed calls, each of which must refuse the image as too large."""
    times = []
    for _ in range(3):
        start = time.perf_counter()
        try:
            convert(msg, max_pixels=max_pixels)
        except ImageError as error:
            times.append(time.perf_counter() - start)
            assert error.kind == "too_large", error
        else:
            pytest.fail("an image over the limit was accepted")
    return min(times)


# Raw images -------------------------------------------------------------------------------

@pytest.mark.parametrize(("encoding", "array", "convert", "is_bgr"), [
    ("rgb8", np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3), rgb_from_image, False),
    ("bgr8", np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3), rgb_from_image, True),
    ("mono16", np.arange(48 * 64, dtype=np.uint16).reshape(48, 64) * 17, ir_from_image, None),
    ("32FC1", np.linspace(-5, 5, 48 * 64, dtype=np.float32).reshape(48, 64), ir_from_image,
     None),
])
def test_raw_within_limit_converts_as_before(encoding, array, convert, is_bgr):
    msg = image(array, encoding)
    for max_pixels in (48 * 64, LIMIT, None):  # the limit itself is allowed
        result = convert(msg, max_pixels=max_pixels)
        if is_bgr is not None:
            result, bgr = result
            assert bgr is is_bgr
        assert result.dtype == array.dtype
        np.testing.assert_array_equal(result, array)


def test_raw_over_limit_refused_fast():
    msg = image(np.zeros((*HUGE, 3), np.uint8), "rgb8")
    assert best_refusal_time(rgb_from_image, msg, LIMIT) < MAX_REFUSAL_S
    with pytest.raises(ImageError) as caught:
        rgb_from_image(msg, max_pixels=LIMIT)
    message = str(caught.value)
    assert "image is 8192x8192 = 67.1 Mpx, over the limit of 16.8 Mpx" in message
    assert "max_image_pixels" in message


def test_raw_ir_over_limit_refused():
    msg = image(np.zeros((512, 640), np.uint16), "mono16")
    with pytest.raises(ImageError) as caught:
        ir_from_image(msg, max_pixels=640 * 512 - 1)
    assert caught.value.kind == "too_large"
    assert "640x512 = 0.3 Mpx" in str(caught.value)


def test_raw_other_errors_come_first():
    msg = image(np.zeros((4, 4), np.uint8), "mono8")
    msg.width = 0
    with pytest.raises(ImageError, match="nothing to process") as caught:
        ir_from_image(msg, max_pixels=1)
    assert caught.value.kind == "zero_size"


# Compressed images ------------------------------------------------------------------------

@pytest.mark.parametrize(("extension", "convert"), [
    (".png", ir_from_compressed), (".jpg", rgb_from_compressed),
    (".tiff", ir_from_compressed), (".bmp", rgb_from_compressed),
])
def test_compressed_over_limit_refused_before_decoding(extension, convert):
    data = encoded(extension, np.zeros(HUGE, np.uint8))  # small on disk, 64 MB decoded
    msg = compressed(data, extension[1:])
    assert best_refusal_time(convert, msg, LIMIT) < MAX_REFUSAL_S
    with pytest.raises(ImageError, match="image is 8192x8192 = 67.1 Mpx, over the limit"):
        convert(msg, max_pixels=LIMIT)


def test_compressed_over_limit_refused_by_byte_size():
    msg = compressed(bytes(2 * 1024 * 1024), "png")  # not even an image: refused before parsing
    with pytest.raises(ImageError, match=r"2\.1 MB, more than .* 1000 px") as caught:
        compressed_to_array(msg, max_pixels=1000)
    assert caught.value.kind == "too_large"


@pytest.mark.parametrize("size", [10_000, 20_000])  # Pillow would warn, or raise
def test_compressed_limit_without_pillow_bomb_check(size):
    msg = compressed(png_header_only(size, size), "png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError, match=f"image is {size}x{size}") as caught:
            ir_from_compressed(msg, max_pixels=LIMIT)
    assert caught.value.kind == "too_large"


def test_compressed_within_limit_converts_as_before():
    ir = (np.arange(120 * 160, dtype=np.uint16).reshape(120, 160) * 3 + 20000)
    ir_msg = compressed(encoded(".png", ir), "png")
    rgb = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    rgb_data = encoded(".jpg", rgb)
    for max_pixels in (120 * 160, None):
        result = ir_from_compressed(ir_msg, max_pixels=max_pixels)
        assert result.dtype == np.uint16
        np.testing.assert_array_equal(result, ir)
        array, bgr = rgb_from_compressed(compressed(rgb_data, "jpeg"), max_pixels=max_pixels)
        assert bgr is True
        np.testing.assert_array_equal(
            array, cv2.imdecode(np.frombuffer(rgb_data, np.uint8), cv2.IMREAD_UNCHANGED))


def test_no_limit_by_default():
    big = np.zeros((3000, 4000), np.uint8)
    assert ir_from_image(image(big, "mono8")).shape == big.shape
    assert ir_from_compressed(compressed(encoded(".png", big), "png")).shape == big.shape


def test_format_without_header_reader_checked_after_decoding():
    try:
        data = encoded(".webp", np.zeros((80, 100, 3), np.uint8))
    except (AssertionError, cv2.error):
        pytest.skip("this OpenCV build cannot encode WebP")
    with pytest.raises(ImageError, match="image is 100x80 = 8000 px") as caught:
        rgb_from_compressed(compressed(data, "webp"), max_pixels=1000)
    assert caught.value.kind == "too_large"


@pytest.mark.parametrize("data", [b"not an image at all" * 10,
                                  b"\x89PNG\r\n\x1a\n" + b"\x00" * 40,  # broken PNG header
                                  b"\xff\xd8\xff" + b"\x01" * 40])  # broken JPEG header
@pytest.mark.parametrize("max_pixels", [LIMIT, None])
def test_garbage_is_undecodable(data, max_pixels):
    with pytest.raises(ImageError) as caught:
        compressed_to_array(compressed(data, "jpeg"), max_pixels=max_pixels)
    assert caught.value.kind == "undecodable"
