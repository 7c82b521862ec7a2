"""The fusion methods a user would otherwise reach for, on grey images in [0, 1]: pixel
average, max-absolute (the larger magnitude per pixel: the maximum, for non-negative
images) and a Laplacian-pyramid fusion (OpenCV; max-absolute detail, averaged base)."""
from __future__ import annotations

import cv2
import numpy as np


def average(ir: np.ndarray, visible: np.ndarray) -> np.ndarray:
    return (ir + visible) / 2


def max_absolute(ir: np.ndarray, visible: np.ndarray) -> np.ndarray:
    return np.where(np.abs(ir) >= np.abs(visible), ir, visible)


def laplacian_pyramid(ir: np.ndarray, visible: np.ndarray, levels: int = 4) -> np.ndarray:
    """Decompose both into Laplacian pyramids, keep the larger-magnitude detail coefficient
    at each level and the mean of the two bases, and collapse."""
    def pyramid(image: np.ndarray) -> list[np.ndarray]:
        gaussian = [image.astype(np.float32)]
        for _ in range(levels):
            gaussian.append(cv2.pyrDown(gaussian[-1]))
        details = [g - cv2.pyrUp(g_next, dstsize=(g.shape[1], g.shape[0]))
                   for g, g_next in zip(gaussian[:-1], gaussian[1:], strict=True)]
        return [*details, gaussian[-1]]

    fused_levels = [max_absolute(a, b) for a, b in zip(pyramid(ir)[:-1], pyramid(visible)[:-1],
                                                        strict=True)]
    image = average(pyramid(ir)[-1], pyramid(visible)[-1])
    for detail in reversed(fused_levels):
        image = cv2.pyrUp(image, dstsize=(detail.shape[1], detail.shape[0])) + detail
    return np.clip(image, 0, 1)


BASELINES = {"average": average, "max_absolute": max_absolute,
             "laplacian_pyramid": laplacian_pyramid}
