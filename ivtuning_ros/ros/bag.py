"""rosbag2 MCAP bags: their RGB and IR image messages read, and MCAP written as rosbag2 does.

* `read_image_pairs` iterates a bag's RGB and IR messages (sensor_msgs Image or
  CompressedImage) in log-time order, deserialised by rclpy into exact message types.
* `BagWriter` writes MCAP as rosbag2 does: profile ``ros2``, ``ros2msg`` schemas, CDR.

A bag is an .mcap file or a rosbag2 folder of them (split files, read in name order).
"""
from __future__ import annotations

import importlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mcap.reader import make_reader
from mcap.records import Channel, Message, Schema
from mcap.writer import Writer
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image

RGB_TOPIC = "/camera/rgb/image_raw"
IR_TOPIC = "/camera/thermal/image_raw"
IMAGE_TYPES = {"sensor_msgs/msg/Image": Image,
               "sensor_msgs/msg/CompressedImage": CompressedImage}
# rosidl (IDL) primitive names -> .msg names
MSG_PRIMITIVES = {"double": "float64", "float": "float32", "boolean": "bool", "octet": "byte"}
SEPARATOR = "=" * 80


# Message types and their ros2msg definitions -----------------------------------------------
def message_class(type_name: str) -> type:
    """The Python class of ``pkg/msg/Type`` (or ``pkg/Type``)."""
    parts = type_name.split("/")
    try:
        return getattr(importlib.import_module(f"{parts[0]}.msg"), parts[-1])
    except (ImportError, AttributeError):
        raise ValueError(f"message type '{type_name}' is not installed here") from None


def type_name(message_type: type) -> str:
    """``pkg/msg/Type`` of a message class, as rosbag2 names schemas."""
    return f"{message_type.__module__.split('.')[0]}/msg/{message_type.__name__}"


def message_definition(message_type: type) -> str:
    """The ros2msg schema text of a message class: its fields, then each nested type's
    after a separator line and ``MSG: pkg/Type`` (the MCAP ros2msg concatenation). Built from
    the class's introspection, so it needs no .msg files; constants and comments are left
    out, which decoders do not need."""
    sections, seen, todo = [], set(), [message_type]
    while todo:
        current = todo.pop(0)
        lines = []
        for name, idl in current.get_fields_and_field_types().items():
            text, nested = _msg_field_type(idl)
            lines.append(f"{text} {name}")
            if nested and nested not in seen:
                seen.add(nested)
                todo.append(message_class(nested))
        header = "" if current is message_type else \
            f"{SEPARATOR}\nMSG: {type_name(current).replace('/msg/', '/')}\n"
        sections.append(header + "\n".join(lines) + "\n")
    return "".join(sections)


def _msg_field_type(idl: str) -> tuple[str, str | None]:
    """rosidl field type -> (.msg field type, nested ``pkg/Type`` or None)."""
    suffix = ""
    sequence = re.fullmatch(r"sequence<(.+?)(?:, (\d+))?>", idl)
    array = re.fullmatch(r"(.+)\[(\d+)\]", idl)
    if sequence:
        idl, suffix = sequence[1], f"[<={sequence[2]}]" if sequence[2] else "[]"
    elif array:
        idl, suffix = array[1], f"[{array[2]}]"
    base = MSG_PRIMITIVES.get(idl, idl)
    return base + suffix, base if "/" in base else None


# Writing ----------------------------------------------------------------------------------
class BagWriter:
    """Writes an MCAP file readable by rosbag2 and MCAP tools (a context manager)."""

    def __init__(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._writer = Writer(str(path))
        self._writer.start(profile="ros2", library="ivtuning_ros")
        self._schemas: dict[tuple[str, bytes], int] = {}
        self._channels: dict[str, int] = {}

    def write(self, topic: str, message, log_time_ns: int) -> None:
        """Serialise a ROS message (rclpy CDR) onto ``topic``."""
        name = type_name(type(message))
        schema_id = self._schema(name, message_definition(type(message)).encode())
        channel_id = self._channel(topic, schema_id, {})
        self._writer.add_message(channel_id, log_time_ns, serialize_message(message),
                                 log_time_ns)

    def copy(self, schema: Schema | None, channel: Channel, message: Message) -> None:
        """Copy a message record of another MCAP unchanged (schema and QoS metadata too)."""
        schema_id = self._schema(schema.name, schema.data) if schema else 0
        channel_id = self._channel(channel.topic, schema_id, channel.metadata)
        self._writer.add_message(channel_id, message.log_time, message.data,
                                 message.publish_time, message.sequence)

    def close(self) -> None:
        self._writer.finish()  # also closes the file

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _schema(self, name: str, data: bytes) -> int:
        key = (name, bytes(data))
        if key not in self._schemas:
            self._schemas[key] = self._writer.register_schema(name, "ros2msg", key[1])
        return self._schemas[key]

    def _channel(self, topic: str, schema_id: int, metadata: dict[str, str]) -> int:
        if topic not in self._channels:
            self._channels[topic] = self._writer.register_channel(topic, "cdr", schema_id,
                                                                  dict(metadata))
        return self._channels[topic]


# Reading ----------------------------------------------------------------------------------
@dataclass
class BagImage:
    """One image message of a bag; ``stream`` is "rgb" or "ir"."""

    stream: str
    topic: str
    log_time_ns: int
    message: Image | CompressedImage


def bag_files(path: str | Path) -> list[Path]:
    """The .mcap files of a bag: the file itself, or a rosbag2 folder's in name order."""
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.mcap"))
        if not files:
            raise FileNotFoundError(f"{path}: a folder without .mcap files (only MCAP bags "
                                    "are read; convert others with `ros2 bag convert`)")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"no such bag: {path}")
    return [path]


def bag_topics(files: list[Path]) -> dict[str, str]:
    """Topic -> message type name (``pkg/msg/Type``) of a bag, from its files' summaries."""
    topics = {}
    for file in files:
        with open(file, "rb") as stream:
            summary = make_reader(stream).get_summary()
        if summary is None:
            raise ValueError(f"{file}: no summary section (an unfinished recording?); "
                             "repair it with `mcap recover`")
        for channel in summary.channels.values():
            schema = summary.schemas.get(channel.schema_id)
            topics[channel.topic] = schema.name if schema else ""
    return topics


def read_image_pairs(path: str | Path, rgb_topic: str = RGB_TOPIC,
                     ir_topic: str = IR_TOPIC) -> Iterator[BagImage]:
    """The bag's RGB and IR messages in log-time order (both streams interleaved)."""
    files = bag_files(path)
    image_streams(bag_topics(files), rgb_topic, ir_topic)
    yield from read_images(files, rgb_topic, ir_topic)


def read_images(files: list[Path], rgb_topic: str, ir_topic: str) -> Iterator[BagImage]:
    streams = {rgb_topic: "rgb", ir_topic: "ir"}
    for schema, channel, message in iter_records(files, list(streams)):
        yield BagImage(streams[channel.topic], channel.topic, message.log_time,
                       deserialize_message(message.data, IMAGE_TYPES[schema.name]))


def iter_records(files: list[Path], topics: list[str] | None = None):
    """(schema, channel, message) records of all files in log-time order."""
    for file in files:
        with open(file, "rb") as stream:
            yield from make_reader(stream).iter_messages(topics=topics, log_time_order=True)


def image_streams(topics: dict[str, str], rgb_topic: str, ir_topic: str) -> dict[str, str]:
    """Topic -> "rgb" / "ir", or ValueError naming the bag's image topics."""
    images = sorted(t for t, kind in topics.items() if kind in IMAGE_TYPES)
    for topic in (rgb_topic, ir_topic):
        if topics.get(topic) not in IMAGE_TYPES:
            found = f"is {topics[topic]}" if topic in topics else "is not in the bag"
            raise ValueError(f"image topic {topic} {found}; the bag's image topics: "
                             f"{', '.join(images) or 'none'}")
    if rgb_topic == ir_topic:
        raise ValueError("the RGB and IR topics must differ")
    return {rgb_topic: "rgb", ir_topic: "ir"}


def message_total(files: list[Path], topics: list[str] | None = None) -> int | None:
    """Messages in the files (on ``topics``), from their statistics; None if unknown."""
    total = 0
    for file in files:
        with open(file, "rb") as stream:
            summary = make_reader(stream).get_summary()
        if summary is None or summary.statistics is None:
            return None
        total += sum(count for channel_id, count in
                     summary.statistics.channel_message_counts.items()
                     if topics is None or summary.channels[channel_id].topic in topics)
    return total
