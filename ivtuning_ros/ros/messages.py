"""Output messages of the perception pipeline, shared by the node and offline replay."""
from __future__ import annotations

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2D, Detection2DArray, ObjectHypothesisWithPose

from ..runtime import Detections
from ..runtime.tracking import TrackState
from .conversions import fill_image


def detections_to_msg(header, detections: Detections,
                      track_ids: list[str] | None = None) -> Detection2DArray:
    """vision_msgs/Detection2DArray of one frame: each box as centre + size in RGB pixels,
    one hypothesis with ``class_id`` = str(label index) and its score, ``id`` its track id
    (empty: untracked); every header is ``header`` (the RGB frame's)."""
    message = Detection2DArray(header=header)
    track_ids = track_ids or [""] * len(detections.scores)
    for (x0, y0, x1, y1), score, label, track in zip(detections.boxes.tolist(),
                                                     detections.scores.tolist(),
                                                     detections.labels.tolist(), track_ids,
                                                     strict=True):
        detection = Detection2D(header=header, id=track)
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


def fusion_state_msg(header, ir_header, rgb_only_reason: str | None,
                     tracks: list[TrackState] | None = None) -> DiagnosticArray:
    """The fusion state of one output, stamped like it (``~/fusion_state``): one status named
    ``fusion`` with ``ir_used`` (true/false), ``rgb_only_reason`` (ir_silent,
    no_ir_within_slop or ir_clock_offset; empty when fused), ``ir_stamp`` (sec.nanosec of
    the IR frame used) and ``ir_stamp_offset_ms`` (IR stamp minus RGB stamp). With
    ``tracks`` (tracking on), a second status named ``tracks``: one value per live track,
    key its id (Detection2D.id), value ``ir`` or ``rgb_only``: how the frame that last
    confirmed the track ran."""
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
    statuses = [status]
    if tracks is not None:
        statuses.append(DiagnosticStatus(
            level=DiagnosticStatus.OK, name="tracks", message=f"{len(tracks)} live tracks",
            hardware_id=header.frame_id,
            values=[KeyValue(key=t.track_id, value="ir" if t.ir else "rgb_only")
                    for t in tracks]))
    return DiagnosticArray(header=header, status=statuses)
