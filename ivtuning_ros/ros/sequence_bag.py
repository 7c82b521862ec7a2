"""Synthetic tracking sequences (`data.synthetic_sequence`) as rosbag2 MCAP files, for
``ivtuning replay`` into the node or ``--offline``: RGB (rgb8) and IR (mono16) images on the
default topics, stamped and logged at the sequence's stamps (dropped frames leave gaps; the
IR dropout leaves RGB alone)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from sensor_msgs.msg import Image

from ..data.synthetic_sequence import SequenceFrame, make_sequence
from .bag import IR_TOPIC, RGB_TOPIC, BagWriter
from .conversions import fill_image

FRAME_ID = "camera_optical_frame"


def write_sequence_bag(frames: Sequence[SequenceFrame], path: Path) -> None:
    """One sequence into the MCAP file ``path``."""
    with BagWriter(path) as writer:
        for frame in frames:
            stamp_ns = round(frame.stamp_s * 1e9)
            writer.write(RGB_TOPIC, _image(frame.sample.rgb, "rgb8", stamp_ns), stamp_ns)
            if frame.sample.ir is not None:
                writer.write(IR_TOPIC, _image(frame.sample.ir, "mono16", stamp_ns), stamp_ns)


def write_sequence_bags(folder: Path, conditions: Sequence[str], seeds: Sequence[int],
                        frames: int) -> list[Path]:
    """``<folder>/sequence_<seed>_<condition>.mcap`` for each condition and seed."""
    paths = []
    for condition in conditions:
        for seed in seeds:
            path = folder / f"sequence_{seed}_{condition}.mcap"
            write_sequence_bag(make_sequence(seed, condition, frames=frames), path)
            paths.append(path)
    return paths


def _image(array, encoding: str, stamp_ns: int) -> Image:
    message = Image()
    message.header.stamp.sec, message.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    message.header.frame_id = FRAME_ID
    fill_image(message, array, encoding)
    return message
