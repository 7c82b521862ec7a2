"""Output messages of the perception pipeline, shared by the node and offline replay."""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

from ..runtime import Detections
from .conversions import fill_image


def detections_to_msg(header, detections: Detections) -> Detection2DArray:
    """vision_msgs/Detection2DArray of one frame: each box as centre + size in RGB pixels,
    one hypothesis with ``class_id`` = str(label index) and its score; every header is
    ``header`` (the RGB frame's)."""
    message = Detection2DArray(header=header)
    for (x0, y0, x1, y1), score, label in zip(detections.boxes.tolist(),
                                              detections.scores.tolist(),
                                              detections.labels.tolist(), strict=True):
        detection = Detection2D(header=header)
        detection.bbox.center.position.x = (x0 + x1) / 2
        detection.bbox.center.position.y = (y0 + y1) / 2
        detection.bbox.size_x = x1 - x0
        detection.bbox.size_y = y1 - y0
        hypothesis = ObjectHypothesisWithPose()
        hypothesis.hypothesis.class_id = str(label)
        hypothesis.hypothesis.score = score
        detection.results.append(hypothesis)
        message.detections.append(detection)
    return message


def image_msg(header, array: np.ndarray, encoding: str) -> Image:
    """sensor_msgs/Image of an (H, W) or (H, W, C) array with ``header``."""
    message = Image(header=header)
    fill_image(message, array, encoding)
    return message
