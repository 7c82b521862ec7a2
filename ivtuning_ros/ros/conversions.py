"""sensor_msgs Image / CompressedImage <-> numpy, without cv_bridge.

Incoming images become zero-copy views of the message buffer where the layout
allows (native byte order); ``step`` (row padding), ``is_bigendian`` and the
encoding are honoured, and anything inconsistent raises `ImageError`, whose
``kind`` names the problem for diagnostics counters.

``max_pixels`` bounds width x height and is checked before any conversion or decoding: raw
images by their ``width`` and ``height`` fields, compressed ones by their byte size and the
size in their header (read by Pillow without decoding pixels).
"""
from __future__ import annotations

import io
import sys
from array import array as Array

import cv2
import numpy as np
from PIL import BmpImagePlugin, JpegImagePlugin, PngImagePlugin, TiffImagePlugin

# encoding -> (numpy dtype, channels)
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "8UC1": (np.dtype(np.uint8), 1),
    "8UC3": (np.dtype(np.uint8), 3),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
RGB_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "8UC3", "mono8", "8UC1")
IR_ENCODINGS = ("mono8", "8UC1", "mono16", "16UC1", "32FC1")

# Pillow classes that read width and height from a header without decoding pixels. Used
# directly rather than through PIL.Image.open, whose decompression-bomb warning or error would
# fire before our own limit. (Pillow's WebP reader allocates the canvas, so it is not here.)
_HEADER_READERS = (PngImagePlugin.PngImageFile, JpegImagePlugin.JpegImageFile,
                   TiffImagePlugin.TiffImageFile, BmpImagePlugin.BmpImageFile)
# A compressed frame within the limit is at most 16-bit RGBA uncompressed, plus its metadata.
_MAX_BYTES_PER_PIXEL = 8
_METADATA_BYTES = 1 << 20
_LIMIT_FIX = ("(parameter max_image_pixels); raise max_image_pixels or lower the camera "
              "resolution")


class ImageError(ValueError):
    """An image message that cannot be used. ``kind`` is a short, stable counter name."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def _pixels(count: int) -> str:
    """A pixel count for messages: megapixels, or plain pixels when small."""
    return f"{count / 1e6:.1f} Mpx" if count >= 100_000 else f"{count} px"


def _check_pixels(width: int, height: int, max_pixels: int | None) -> None:
    """Raise ImageError("too_large") when width x height exceeds ``max_pixels`` (None: none)."""
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError("too_large", f"image is {width}x{height} = {_pixels(width * height)}, "
                         f"over the limit of {_pixels(max_pixels)} {_LIMIT_FIX}")


def image_to_array(msg, allowed: tuple[str, ...] = tuple(ENCODINGS), *,
                   max_pixels: int | None = None) -> np.ndarray:
    """sensor_msgs/Image -> (H, W) or (H, W, C) array, a view of ``msg.data`` when possible."""
    encoding = msg.encoding
    if encoding not in ENCODINGS or encoding not in allowed:
        raise ImageError("unknown_encoding", f"image encoding '{encoding}' is not supported "
                         f"here; use one of {', '.join(allowed)}")
    dtype, channels = ENCODINGS[encoding]
    height, width, step = msg.height, msg.width, msg.step
    if height == 0 or width == 0:
        raise ImageError("zero_size", f"image is {width}x{height}: nothing to process")
    _check_pixels(width, height, max_pixels)
    row_bytes = width * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageError("wrong_step", f"step {step} is smaller than width * pixel size "
                         f"= {row_bytes} for {encoding}")
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size < step * height:
        raise ImageError("truncated", f"image data has {data.size} bytes, {encoding} "
                         f"{width}x{height} with step {step} needs {step * height}")
    rows = data[: step * height].reshape(height, step)[:, :row_bytes]
    order = ">" if msg.is_bigendian else "<"
    array = rows.view(dtype.newbyteorder(order) if dtype.itemsize > 1 else dtype)
    array = array.reshape((height, width) if channels == 1 else (height, width, channels))
    if dtype.itemsize > 1 and (msg.is_bigendian != (sys.byteorder == "big")):
        array = array.astype(dtype)  # to native order: a copy, only for foreign-endian data
    return array


def rgb_from_image(msg, *, max_pixels: int | None = None) -> tuple[np.ndarray, bool]:
    """An RGB camera image -> ((H, W, 3) uint8, is_bgr). Alpha is dropped, mono replicated."""
    array = image_to_array(msg, RGB_ENCODINGS, max_pixels=max_pixels)
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2), False
    return array[..., :3], msg.encoding in ("bgr8", "bgra8", "8UC3")


def ir_from_image(msg, *, max_pixels: int | None = None) -> np.ndarray:
    """A thermal image -> (h, w) uint8 / uint16 / float32."""
    return image_to_array(msg, IR_ENCODINGS, max_pixels=max_pixels)


class _BufferStream(io.RawIOBase):
    """A read-only, seekable file over a uint8 array without copying it, as io.BytesIO would:
    header readers touch a few bytes of what may be a payload of many megabytes."""

    def __init__(self, data: np.ndarray) -> None:
        super().__init__()
        self._data = data
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:
        chunk = self._data[self._position:self._position + len(buffer)]
        memoryview(buffer).cast("B")[:chunk.size] = chunk
        self._position += chunk.size
        return chunk.size

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        start = (0, self._position, self._data.size)[whence]
        self._position = max(0, start + offset)
        return self._position

    def tell(self) -> int:
        return self._position


def _header_size(data: np.ndarray) -> tuple[int, int] | None:
    """(width, height) from a PNG, JPEG, TIFF or BMP header; None when none of them reads it."""
    for reader in _HEADER_READERS:
        try:
            with reader(_BufferStream(data)) as image:
                return image.size
        except Exception:  # not this format, or a header Pillow cannot parse: the decoder decides
            continue
    return None


def _check_compressed_size(data: np.ndarray, max_pixels: int | None) -> None:
    """Refuse, before decoding, compressed data too large for ``max_pixels``: by its byte size,
    then by the size in its header. A header not read here is left to the decoder."""
    if max_pixels is None:
        return
    if data.size > max_pixels * _MAX_BYTES_PER_PIXEL + _METADATA_BYTES:
        raise ImageError("too_large", f"compressed image has {data.size / 1e6:.1f} MB, more "
                         f"than any image within the limit of {_pixels(max_pixels)} takes "
                         f"{_LIMIT_FIX}")
    size = _header_size(data)
    if size is not None:
        _check_pixels(*size, max_pixels)


def compressed_to_array(msg, *, max_pixels: int | None = None) -> np.ndarray:
    """sensor_msgs/CompressedImage -> decoded array (BGR order for colour, as OpenCV decodes).

    Formats whose header is not read before decoding (WebP, ...) are checked after it."""
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ImageError("zero_size", "compressed image has no data")
    _check_compressed_size(data, max_pixels)
    array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ImageError("undecodable", f"compressed image (format '{msg.format}') could not "
                         "be decoded; expected JPEG or PNG")
    _check_pixels(array.shape[1], array.shape[0], max_pixels)
    return array


def rgb_from_compressed(msg, *, max_pixels: int | None = None) -> tuple[np.ndarray, bool]:
    """A compressed RGB camera image -> ((H, W, 3) uint8, is_bgr)."""
    array = compressed_to_array(msg, max_pixels=max_pixels)
    if array.dtype != np.uint8:
        raise ImageError("unknown_encoding", "compressed RGB image must decode to 8 bits")
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2), False
    return array[..., :3], True


def ir_from_compressed(msg, *, max_pixels: int | None = None) -> np.ndarray:
    """A compressed thermal image (8- or 16-bit PNG, or JPEG) -> (h, w) array."""
    array = compressed_to_array(msg, max_pixels=max_pixels)
    return array if array.ndim == 2 else array[..., 0]


def fill_image(msg, array: np.ndarray, encoding: str) -> None:
    """Fill a sensor_msgs/Image from a contiguous (H, W) or (H, W, C) array."""
    array = np.ascontiguousarray(array)
    msg.height, msg.width = array.shape[:2]
    msg.encoding = encoding
    msg.is_bigendian = sys.byteorder == "big"
    msg.step = array.strides[0]
    data = Array("B")
    data.frombytes(array.reshape(-1).view(np.uint8).data)  # one copy, taken as is by the msg
    msg.data = data
