"""Offline processing of a bag: `process_offline` runs an `Engine` without DDS, pairing RGB
and IR by nearest stamp, and writes a new MCAP: every input message plus
``/<node>/detections`` and ``/<node>/segmentation/mask`` at each RGB message's log time, and,
given a fusion runner, ``/<node>/fused/image`` (M2PN) for every frame fused with IR; given a
`Tracker`, the detections carry track ids (``Detection2D.id``) as the node's do."""
from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from mcap.records import Message
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import CompressedImage
from std_msgs.msg import Header
from tqdm import tqdm

from ..runtime import Engine
from ..runtime.image_fusion import FusionRunner
from ..runtime.tracking import Tracker
from .bag import (
    IMAGE_TYPES,
    IR_TOPIC,
    RGB_TOPIC,
    BagWriter,
    bag_files,
    bag_topics,
    image_streams,
    iter_records,
    message_total,
)
from .conversions import (
    ImageError,
    ir_from_compressed,
    ir_from_image,
    rgb_from_compressed,
    rgb_from_image,
)
from .messages import detections_to_msg, image_msg
from .params import NODE_NAME

IR_HISTORY = 8  # IR frames kept as pairing candidates offline
MAX_RGB_WAIT_NS = 1_000_000_000  # of log time: an RGB frame waits no longer for its IR


@dataclass
class _Frame:
    stamp_ns: int
    log_time_ns: int
    header: Header
    array: np.ndarray
    bgr: bool = False


class _NearestPairer:
    """Offline pairing of each RGB frame with the IR frame nearest in stamp within ``slop``.

    An RGB frame is settled once an IR stamp at or past its own has arrived (IR stamps
    rise, so no later IR frame can be nearer), after ``MAX_RGB_WAIT_NS`` of log time, or at
    the end of the bag; no partner within slop means RGB-only.
    """

    def __init__(self, slop_ns: int) -> None:
        self.slop_ns = slop_ns
        self._ir: deque[_Frame] = deque(maxlen=IR_HISTORY)
        self._rgb: deque[_Frame] = deque()

    def add(self, stream: str, frame: _Frame) -> None:
        (self._rgb if stream == "rgb" else self._ir).append(frame)

    def settled(self, now_ns: int | None) -> Iterator[tuple[_Frame, _Frame | None]]:
        """Pairs decided at log time ``now_ns``; all that remain when it is None."""
        while self._rgb:
            rgb = self._rgb[0]
            ir_past = bool(self._ir) and self._ir[-1].stamp_ns >= rgb.stamp_ns
            if now_ns is not None and not ir_past \
                    and now_ns - rgb.log_time_ns <= MAX_RGB_WAIT_NS:
                return
            self._rgb.popleft()
            yield rgb, self._nearest(rgb.stamp_ns)

    def _nearest(self, stamp_ns: int) -> _Frame | None:
        best = min(self._ir, key=lambda f: abs(f.stamp_ns - stamp_ns), default=None)
        return best if best is not None and abs(best.stamp_ns - stamp_ns) <= self.slop_ns else None


def process_offline(path: str | Path, out_path: str | Path, engine: Engine,
                    rgb_topic: str = RGB_TOPIC, ir_topic: str = IR_TOPIC, slop: float = 0.02,
                    homography: np.ndarray | None = None, node_name: str = NODE_NAME,
                    progress: bool = True, fusion: FusionRunner | None = None,
                    tracker: Tracker | None = None) -> Counter:
    """Run ``engine`` on the bag's RGB + IR pairs and write ``out_path`` (see the module
    docstring); ``slop`` in s, ``homography`` IR -> RGB pixels (None: scaling); ``fusion``
    also writes the operator's fused image of every pair; ``tracker`` tracks the detections
    by the RGB stamps (the engine must keep scores down to `Tracker.low_score`).

    Returns counts: ``rgb``, ``ir`` (messages read), ``fused``, ``rgb_only`` (frames run),
    ``detections``, ``masks``, ``fused_images`` (messages written), ``bad_rgb``, ``bad_ir``
    (unusable images).
    """
    files = bag_files(path)
    if Path(out_path).resolve() in [f.resolve() for f in files]:
        raise ValueError(f"{out_path} is the input bag; write to a new file")
    streams = image_streams(bag_topics(files), rgb_topic, ir_topic)
    pairer = _NearestPairer(int(slop * 1e9))
    counts: Counter = Counter()
    outputs = (f"/{node_name}/detections", f"/{node_name}/segmentation/mask",
               f"/{node_name}/fused/image")
    with BagWriter(out_path) as writer, tqdm(total=message_total(files), unit="msg",
                                             desc="offline", disable=not progress) as bar:
        infer = partial(_infer, engine, fusion, tracker, writer, homography, outputs, counts)
        for schema, channel, message in iter_records(files):
            writer.copy(schema, channel, message)
            stream = streams.get(channel.topic)
            if stream:
                counts[stream] += 1
                frame = _decode(stream, schema.name, message, counts)
                if frame is not None:
                    pairer.add(stream, frame)
            for rgb, ir in pairer.settled(message.log_time):
                infer(rgb, ir)
            bar.update()
        for rgb, ir in pairer.settled(None):
            infer(rgb, ir)
    return counts


def _decode(stream: str, schema_name: str, record: Message, counts: Counter) -> _Frame | None:
    """An image record as a frame (zero-copy view), or None, counted, if unusable."""
    message = deserialize_message(record.data, IMAGE_TYPES[schema_name])
    compressed = isinstance(message, CompressedImage)
    try:
        if stream == "rgb":
            array, bgr = (rgb_from_compressed if compressed else rgb_from_image)(message)
        else:
            array, bgr = (ir_from_compressed if compressed else ir_from_image)(message), False
    except ImageError:
        counts[f"bad_{stream}"] += 1
        return None
    stamp = message.header.stamp
    return _Frame(stamp.sec * 1_000_000_000 + stamp.nanosec, record.log_time, message.header,
                  array, bgr)


def _infer(engine: Engine, fusion: FusionRunner | None, tracker: Tracker | None,
           writer: BagWriter,
           homography: np.ndarray | None, outputs: tuple[str, str, str], counts: Counter,
           rgb: _Frame, ir: _Frame | None) -> None:
    """Run one frame; write its detections, mask and fused image with the RGB header and
    log time."""
    result = engine.infer(rgb.array, None if ir is None else ir.array, homography,
                          bgr=rgb.bgr)
    counts["fused" if ir is not None else "rgb_only"] += 1
    if result.detections is not None:
        detections, track_ids = result.detections, None
        if tracker is not None:
            tracked = tracker.update(detections, rgb.stamp_ns / 1e9, result.ir_used,
                                     rgb.array.shape[:2])
            detections, track_ids = tracked.detections, tracked.track_ids
        writer.write(outputs[0], detections_to_msg(rgb.header, detections, track_ids),
                     rgb.log_time_ns)
        counts["detections"] += 1
    if result.class_map is not None:
        writer.write(outputs[1], image_msg(rgb.header, result.class_map, "mono8"),
                     rgb.log_time_ns)
        counts["masks"] += 1
    if fusion is not None and ir is not None:
        visible = rgb.array[..., ::-1] if rgb.bgr else rgb.array
        registered = engine.register_ir(ir.array, homography, visible.shape)
        writer.write(outputs[2], image_msg(rgb.header, fusion.fuse(visible, registered), "rgb8"),
                     rgb.log_time_ns)
        counts["fused_images"] += 1
