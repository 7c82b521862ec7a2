"""sensor_msgs Image / CompressedImage <-> numpy, without cv_bridge.

Incoming images become zero-copy views of the message buffer where the layout
allows (native byte order); ``step`` (row padding), ``is_bigendian`` and the
encoding are honoured, and anything inconsistent raises `ImageError`, whose
``kind`` names the problem for diagnostics counters.
"""
from __future__ import annotations

import sys
from array import array as Array

import cv2
import numpy as np

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


class ImageError(ValueError):
    """An image message that cannot be used. ``kind`` is a short, stable counter name."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def image_to_array(msg, allowed: tuple[str, ...] = tuple(ENCODINGS)) -> np.ndarray:
    """sensor_msgs/Image -> (H, W) or (H, W, C) array, a view of ``msg.data`` when possible."""
    encoding = msg.encoding
    if encoding not in ENCODINGS or encoding not in allowed:
        raise ImageError("unknown_encoding", f"image encoding '{encoding}' is not supported "
                         f"here; use one of {', '.join(allowed)}")
    dtype, channels = ENCODINGS[encoding]
    height, width, step = msg.height, msg.width, msg.step
    if height == 0 or width == 0:
        raise ImageError("zero_size", f"image is {width}x{height}: nothing to process")
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


def rgb_from_image(msg) -> tuple[np.ndarray, bool]:
    """An RGB camera image -> ((H, W, 3) uint8, is_bgr). Alpha is dropped, mono replicated."""
    array = image_to_array(msg, RGB_ENCODINGS)
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2), False
    return array[..., :3], msg.encoding in ("bgr8", "bgra8", "8UC3")


def ir_from_image(msg) -> np.ndarray:
    """A thermal image -> (h, w) uint8 / uint16 / float32."""
    return image_to_array(msg, IR_ENCODINGS)


def compressed_to_array(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage -> decoded array (BGR order for colour, as OpenCV decodes)."""
    data = np.frombuffer(msg.data, dtype=np.uint8)
    if data.size == 0:
        raise ImageError("zero_size", "compressed image has no data")
    array = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ImageError("undecodable", f"compressed image (format '{msg.format}') could not "
                         "be decoded; expected JPEG or PNG")
    return array


def rgb_from_compressed(msg) -> tuple[np.ndarray, bool]:
    """A compressed RGB camera image -> ((H, W, 3) uint8, is_bgr)."""
    array = compressed_to_array(msg)
    if array.dtype != np.uint8:
        raise ImageError("unknown_encoding", "compressed RGB image must decode to 8 bits")
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2), False
    return array[..., :3], True


def ir_from_compressed(msg) -> np.ndarray:
    """A compressed thermal image (8- or 16-bit PNG, or JPEG) -> (h, w) array."""
    array = compressed_to_array(msg)
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
