"""Inference runtime between raw frames and results: no ROS imports here."""
from .engine import (
    LARGE_LAYOUT_PIXELS,
    Detections,
    Engine,
    EngineOptions,
    Result,
    trim_host_heap,
)
from .palette import colorize, palette
from .preprocess import Preprocessor, count_non_finite
from .registration import scaling_homography, warp_ir_to_rgb

__all__ = [
    "LARGE_LAYOUT_PIXELS",
    "Detections",
    "Engine",
    "EngineOptions",
    "Preprocessor",
    "Result",
    "colorize",
    "count_non_finite",
    "palette",
    "scaling_homography",
    "trim_host_heap",
    "warp_ir_to_rgb",
]
