"""Output messages of the perception pipeline, shared by the node and offline replay."""
from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
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


def fusion_state_msg(header, ir_header, rgb_only_reason: str | None) -> DiagnosticArray:
    """The fusion state of one output, stamped like it (``~/fusion_state``): one status named
    ``fusion`` with ``ir_used`` (true/false), ``rgb_only_reason`` (ir_silent,
    no_ir_within_slop or ir_clock_offset; empty when fused), ``ir_stamp`` (sec.nanosec of
    the IR frame used) and ``ir_stamp_offset_ms`` (IR stamp minus RGB stamp)."""
    fused = ir_header is not None
    values = {"ir_used": "true" if fused else "false",
              "rgb_only_reason": rgb_only_reason or "", "ir_stamp": "",
              "ir_stamp_offset_ms": ""}
    if fused:
        stamp = ir_header.stamp
        values["ir_stamp"] = f"{stamp.sec}.{stamp.nanosec:09d}"
        offset = (stamp.sec - header.stamp.sec) * 1e9 + stamp.nanosec - header.stamp.nanosec
        values["ir_stamp_offset_ms"] = f"{offset / 1e6:.3f}"
    status = DiagnosticStatus(level=DiagnosticStatus.OK, name="fusion",
                              message="fused" if fused else f"rgb_only: {rgb_only_reason}",
                              hardware_id=header.frame_id,
                              values=[KeyValue(key=k, value=v) for k, v in values.items()])
    return DiagnosticArray(header=header, status=[status])
