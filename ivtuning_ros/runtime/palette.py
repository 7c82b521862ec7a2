"""Class colours for segmentation maps: distinct, deterministic, one per class id."""
from __future__ import annotations

import colorsys

import numpy as np


def palette(num_classes: int) -> np.ndarray:
    """(num_classes, 3) uint8 RGB: class 0 (unlabeled/background) black, then spread hues."""
    colours = np.zeros((max(num_classes, 1), 3), dtype=np.uint8)
    for index in range(1, num_classes):
        hue = (index * 0.618033988749895) % 1.0  # golden-ratio steps keep neighbours apart
        value = 1.0 if index % 2 else 0.75
        colours[index] = np.round(np.array(colorsys.hsv_to_rgb(hue, 0.85, value)) * 255)
    return colours


def colorize(class_map: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """(H, W) class ids -> (H, W, 3) uint8 RGB."""
    return colours[class_map]
