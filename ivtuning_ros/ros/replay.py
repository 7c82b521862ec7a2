"""rosbag2 MCAP replay: RGB + IR bags into the perception node, live or offline.

* `read_image_pairs` iterates a bag's RGB and IR messages (sensor_msgs Image or
  CompressedImage) in log-time order, deserialised by rclpy into exact message types.
* `replay_into_node` publishes them, paced by their log times, to a running node's
  inputs over DDS (or to a node it starts in-process) and counts the node's answers.
* `process_offline` runs an `Engine` without DDS, pairing RGB and IR by nearest stamp,
  and writes a new MCAP: every input message plus ``/<node>/detections`` and
  ``/<node>/segmentation/mask`` at each RGB message's log time, and, given a fusion
  checkpoint, ``/<node>/fused/image`` (M2PN) for every frame fused with IR.

A bag is an .mcap file or a rosbag2 folder of them (split files, read in name order).
`BagWriter` writes MCAP as rosbag2 does: profile ``ros2``, ``ros2msg`` schemas, CDR.
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import time
from collections import Counter, deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import rclpy
import torch
from mcap.reader import make_reader
from mcap.records import Channel, Message, Schema
from mcap.writer import Writer
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message, serialize_message
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from tqdm import tqdm
from vision_msgs.msg import Detection2DArray

from ..calibration import homography_from_params
from ..model import load_model
from ..runtime import Engine, EngineOptions
from ..runtime.fusion import FusionRunner
from .conversions import (
    ImageError,
    ir_from_compressed,
    ir_from_image,
    rgb_from_compressed,
    rgb_from_image,
)
from .messages import detections_to_msg, image_msg
from .node import PerceptionNode
from .params import package_dir
from .spinning import spinning

NODE_NAME = "ivtuning_perception"
RGB_TOPIC = "/camera/rgb/image_raw"
IR_TOPIC = "/camera/thermal/image_raw"
IMAGE_TYPES = {"sensor_msgs/msg/Image": Image,
               "sensor_msgs/msg/CompressedImage": CompressedImage}
IR_HISTORY = 8  # IR frames kept as pairing candidates offline
MAX_RGB_WAIT_NS = 1_000_000_000  # of log time: an RGB frame waits no longer for its IR
MATCH_TIMEOUT_S = 30.0
DRAIN_IDLE_S = 3.0  # after the last message: stop waiting once the node is this long silent
REPLAY_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# A bag's stamps are from when it was recorded: the node must not refuse them as far from
# its clock (a node running elsewhere needs max_stamp_offset 0 or use_sim_time with /clock).
IN_PROCESS_PARAMETERS = {"qos_reliability": "reliable", "qos_depth": 10, "max_stamp_offset": 0.0}
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


def _topics(files: list[Path]) -> dict[str, str]:
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
    _image_streams(_topics(files), rgb_topic, ir_topic)
    yield from _read_images(files, rgb_topic, ir_topic)


def _read_images(files: list[Path], rgb_topic: str, ir_topic: str) -> Iterator[BagImage]:
    streams = {rgb_topic: "rgb", ir_topic: "ir"}
    for schema, channel, message in _iter_records(files, list(streams)):
        yield BagImage(streams[channel.topic], channel.topic, message.log_time,
                       deserialize_message(message.data, IMAGE_TYPES[schema.name]))


def _iter_records(files: list[Path], topics: list[str] | None = None):
    """(schema, channel, message) records of all files in log-time order."""
    for file in files:
        with open(file, "rb") as stream:
            yield from make_reader(stream).iter_messages(topics=topics, log_time_order=True)


def _image_streams(topics: dict[str, str], rgb_topic: str, ir_topic: str) -> dict[str, str]:
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


def _message_total(files: list[Path], topics: list[str] | None = None) -> int | None:
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


# Offline processing -----------------------------------------------------------------------
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
                    progress: bool = True, fusion: FusionRunner | None = None) -> Counter:
    """Run ``engine`` on the bag's RGB + IR pairs and write ``out_path`` (see the module
    docstring); ``slop`` in s, ``homography`` IR -> RGB pixels (None: scaling); ``fusion``
    also writes the operator's fused image of every pair.

    Returns counts: ``rgb``, ``ir`` (messages read), ``fused``, ``rgb_only`` (frames run),
    ``detections``, ``masks``, ``fused_images`` (messages written), ``bad_rgb``, ``bad_ir``
    (unusable images).
    """
    files = bag_files(path)
    if Path(out_path).resolve() in [f.resolve() for f in files]:
        raise ValueError(f"{out_path} is the input bag; write to a new file")
    streams = _image_streams(_topics(files), rgb_topic, ir_topic)
    pairer = _NearestPairer(int(slop * 1e9))
    counts: Counter = Counter()
    outputs = (f"/{node_name}/detections", f"/{node_name}/segmentation/mask",
               f"/{node_name}/fused/image")
    with BagWriter(out_path) as writer, tqdm(total=_message_total(files), unit="msg",
                                             desc="offline", disable=not progress) as bar:
        infer = partial(_infer, engine, fusion, writer, homography, outputs, counts)
        for schema, channel, message in _iter_records(files):
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


def _infer(engine: Engine, fusion: FusionRunner | None, writer: BagWriter,
           homography: np.ndarray | None, outputs: tuple[str, str, str], counts: Counter,
           rgb: _Frame, ir: _Frame | None) -> None:
    """Run one frame; write its detections, mask and fused image with the RGB header and
    log time."""
    result = engine.infer(rgb.array, None if ir is None else ir.array, homography,
                          bgr=rgb.bgr)
    counts["fused" if ir is not None else "rgb_only"] += 1
    if result.detections is not None:
        writer.write(outputs[0], detections_to_msg(rgb.header, result.detections),
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


# Live replay ------------------------------------------------------------------------------
def replay_into_node(path: str | Path, rgb_topic: str = RGB_TOPIC, ir_topic: str = IR_TOPIC,
                     rate: float | None = 1.0, node_name: str = NODE_NAME,
                     in_process: bool = False, parameters: dict | None = None,
                     context=None, progress: bool = True) -> Counter:
    """Publish the bag's RGB and IR messages to ``/<node_name>/rgb/image`` and ``.../ir/image``
    (``.../compressed`` for CompressedImage) with reliable QoS, once the node subscribes.

    Args:
        rate: replay speed against the recording (log-time gaps / rate); None: no pauses.
        in_process: start a `PerceptionNode` here, with ``parameters`` overriding its
            defaults (reliable input QoS, depth 10, unless given), instead of publishing
            to a node running elsewhere.
        context: an initialised rclpy context to use; None: one of its own.
    Returns:
        counts ``rgb``, ``ir`` (messages published) and ``detections`` (the node's
        Detection2DArray messages received meanwhile and until it has answered every RGB
        message or stayed silent for ``DRAIN_IDLE_S``).
    """
    if rate is not None and rate <= 0:
        raise ValueError(f"rate must be positive (or None for as fast as possible), got {rate}")
    files = bag_files(path)
    topics = _topics(files)
    streams = _image_streams(topics, rgb_topic, ir_topic)
    types = {stream: IMAGE_TYPES[topics[topic]] for topic, stream in streams.items()}
    with _ros_context(context) as ros:
        node_parameters = {**IN_PROCESS_PARAMETERS, **(parameters or {})}
        with _in_process_node(ros, node_name, node_parameters) if in_process else _nothing():
            return _replay(files, rgb_topic, ir_topic, types, rate, node_name, ros, progress)


def _replay(files: list[Path], rgb_topic: str, ir_topic: str, types: dict[str, type],
            rate: float | None, node_name: str, ros, progress: bool) -> Counter:
    replayer = rclpy.create_node(f"ivtuning_replay_{os.getpid()}", context=ros)
    publishers = {stream: replayer.create_publisher(
        kind, _input_topic(node_name, stream, kind), REPLAY_QOS) for stream, kind in types.items()}
    answers: list[float] = []
    output = f"/{node_name}/detections"
    answer_subscription = replayer.create_subscription(
        Detection2DArray, output, lambda _: answers.append(time.monotonic()), 10)
    try:
        with spinning(ros, [replayer]):
            _wait_for_node(publishers, answer_subscription, node_name)
            counts = _publish(files, rgb_topic, ir_topic, publishers, rate, progress)
            _drain(answers, counts["rgb"])
    finally:
        replayer.destroy_node()
    counts["detections"] = len(answers)
    return counts


def _input_topic(node_name: str, stream: str, kind: type) -> str:
    return f"/{node_name}/{stream}/image" + ("/compressed" if kind is CompressedImage else "")


def _wait_for_node(publishers: dict, answer_subscription, node_name: str) -> None:
    """Until our publishers and our detections subscription are matched with the node's
    endpoints (matched, not merely listed in the graph: an answer sent before the match
    would be lost)."""
    deadline = time.monotonic() + MATCH_TIMEOUT_S
    while not (all(p.get_subscription_count() for p in publishers.values())
               and answer_subscription.get_publisher_count()):
        if time.monotonic() > deadline:
            topics = ", ".join(p.topic_name for p in publishers.values())
            raise TimeoutError(f"no perception node answered within {MATCH_TIMEOUT_S:.0f} s "
                               f"on {topics}: is '{node_name}' running and active, with "
                               "use_compressed matching the bag's image type?")
        time.sleep(0.05)


def _publish(files: list[Path], rgb_topic: str, ir_topic: str, publishers: dict,
             rate: float | None, progress: bool) -> Counter:
    """Publish in log-time order; sleep to each message's recorded offset / rate (measured
    from the start, so publishing time does not accumulate as drift)."""
    counts: Counter = Counter()
    start_wall = first_log = None
    with tqdm(total=_message_total(files, [rgb_topic, ir_topic]), unit="msg", desc="replay",
              disable=not progress) as bar:
        for image in _read_images(files, rgb_topic, ir_topic):
            if start_wall is None:
                start_wall, first_log = time.monotonic(), image.log_time_ns
            if rate is not None:
                delay = start_wall + (image.log_time_ns - first_log) / 1e9 / rate \
                    - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            publishers[image.stream].publish(image.message)
            counts[image.stream] += 1
            bar.update()
    return counts


def _drain(answers: list[float], expected: int) -> None:
    """Wait for the node's last answers: all ``expected`` of them, or until it is silent."""
    last = time.monotonic()
    while len(answers) < expected:
        if answers:
            last = max(last, answers[-1])
        if time.monotonic() - last > DRAIN_IDLE_S:
            return
        time.sleep(0.02)


@contextmanager
def _ros_context(context):
    """The given rclpy context, or a fresh one shut down afterwards."""
    if context is not None:
        yield context
        return
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        context.try_shutdown()


@contextmanager
def _in_process_node(context, node_name: str, parameters: dict):
    """A configured, active `PerceptionNode` spinning in this process."""
    node = PerceptionNode(node_name, context=context, parameter_overrides=[
        Parameter(name, value=value) for name, value in parameters.items()])
    try:
        with spinning(context, [node]):
            if node.trigger_configure() != TransitionCallbackReturn.SUCCESS:
                raise ValueError("the in-process perception node failed to configure (its "
                                 "log above says why)")
            node.trigger_activate()
            try:
                yield node
            finally:
                node.trigger_deactivate()  # stops the inference thread
    finally:
        node.destroy_node()


@contextmanager
def _nothing():
    yield None


# Command line -----------------------------------------------------------------------------
def add_replay_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``replay`` subcommand to an argparse subparsers object."""
    parser = subparsers.add_parser(
        "replay", help="replay an RGB + IR rosbag2 MCAP into the node, or process it offline",
        description="Publish a bag's RGB and IR images to the perception node at the "
                    "recorded rate (the node runs elsewhere, or --in-process), or with "
                    "--offline run the model without ROS communication and write a new MCAP "
                    "with the inputs, detections, segmentation masks and (with "
                    "--fusion-checkpoint) fused images.")
    parser.add_argument("bag", help="an .mcap file or a rosbag2 folder of them")
    parser.add_argument("--rgb-topic", default=RGB_TOPIC, help=f"default {RGB_TOPIC}")
    parser.add_argument("--ir-topic", default=IR_TOPIC, help=f"default {IR_TOPIC}")
    pace = parser.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=float, help="replay speed factor (default 1.0)")
    pace.add_argument("--fast", action="store_true", help="publish without pauses")
    parser.add_argument("--node-name", default=NODE_NAME,
                        help=f"the perception node's name (default {NODE_NAME})")
    parser.add_argument("--in-process", action="store_true",
                        help="start the perception node in this process (reliable input QoS)")
    parser.add_argument("--offline", action="store_true",
                        help="no DDS: run the model here and write --out")
    parser.add_argument("--out", help="--offline: output MCAP (default "
                                      "out/<bag name>_perception.mcap)")
    parser.add_argument("--force", action="store_true", help="--offline: overwrite --out")
    parser.add_argument("--config", default="ivt_swin_t_realtime.yaml",
                        help="--offline/--in-process: model config, a file or a name under "
                             "models/ (default ivt_swin_t_realtime.yaml)")
    parser.add_argument("--checkpoint", default="",
                        help="--offline/--in-process: full or adapter checkpoint (default: "
                             "untrained)")
    parser.add_argument("--base-weights", default="",
                        help="frozen Swin weights under an adapter checkpoint")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, "
                                                         "cuda or cuda:N")
    parser.add_argument("--calibration", metavar="FILE",
                        help="--offline/--in-process: parameters YAML with the IR -> RGB "
                             "homography (as `ivtuning calibrate` writes); default: scaling")
    parser.add_argument("--fusion-checkpoint", default="",
                        help="--offline/--in-process: M2PN checkpoint (a file or a name under "
                             "models/, e.g. m2pn_demo.pth): also write/publish the fused image")
    parser.add_argument("--fusion-width", type=int, default=320,
                        help="width M2PN runs at, px (default 320; output at the RGB size)")
    parser.add_argument("--slop", type=float, default=0.02,
                        help="--offline: largest RGB-IR stamp difference of a pair, s")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(run=run_replay_command)
    return parser


def run_replay_command(args: argparse.Namespace) -> int:
    """Run ``replay``: live into a node, or offline; print one summary line."""
    if args.offline:
        return _run_offline(args)
    if args.out or args.force:
        raise ValueError("--out and --force go with --offline")
    rate = None if args.fast else (1.0 if args.rate is None else args.rate)
    parameters = _node_parameters(args) if args.in_process else None
    counts = replay_into_node(args.bag, args.rgb_topic, args.ir_topic, rate, args.node_name,
                              args.in_process, parameters, progress=not args.quiet)
    print(f"replayed {counts['rgb']} RGB + {counts['ir']} IR messages from {args.bag} into "
          f"/{args.node_name} ({'as fast as possible' if rate is None else f'rate {rate:g}'}); "
          f"the node answered with {counts['detections']} detections messages")
    return 0


def _run_offline(args: argparse.Namespace) -> int:
    if args.rate is not None or args.fast or args.in_process:
        raise ValueError("--rate, --fast and --in-process go with live replay, not --offline")
    out = Path(args.out or f"out/{Path(args.bag).stem}_perception.mcap")
    if out.exists() and not args.force:
        raise ValueError(f"'{out}' exists; pass --force to overwrite it")
    engine = _offline_engine(args)
    fusion = None
    if args.fusion_checkpoint:
        fusion = FusionRunner(_model_file(args.fusion_checkpoint), args.fusion_width,
                              str(engine.device))
    homography = _calibration(args)
    counts = process_offline(args.bag, out, engine, args.rgb_topic, args.ir_topic, args.slop,
                             homography, args.node_name, progress=not args.quiet,
                             fusion=fusion)
    fused_images = f" and {counts['fused_images']} fused images" if fusion else ""
    print(f"processed {counts['fused'] + counts['rgb_only']} RGB frames of {args.bag} "
          f"({counts['fused']} fused with IR, {counts['rgb_only']} RGB-only, "
          f"{counts['bad_rgb'] + counts['bad_ir']} unusable images): wrote {out} with "
          f"{counts['detections']} detections, {counts['masks']} masks{fused_images}")
    return 0


def _offline_engine(args: argparse.Namespace) -> Engine:
    """An engine of the model the node would load from the same options."""
    path = _model_file(args.config)
    model, config, trained = load_model(None if args.checkpoint else path,
                                        args.checkpoint or None,
                                        base_weights=args.base_weights or None)
    if not trained:
        print(f"no --checkpoint: {config.name} runs with untrained heads and prompter")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    return Engine(model, config, EngineOptions(device=device))


def _model_file(name: str) -> Path:
    """A file, or a name under the package's models/."""
    path = Path(name)
    return path if path.is_file() else package_dir("models") / name


def _calibration(args: argparse.Namespace) -> np.ndarray | None:
    return homography_from_params(args.calibration, args.node_name) if args.calibration \
        else None


def _node_parameters(args: argparse.Namespace) -> dict:
    parameters = {"model_config": args.config, "checkpoint": args.checkpoint,
                  "base_weights": args.base_weights, "device": args.device,
                  "fusion_checkpoint": args.fusion_checkpoint,
                  "fusion_width": args.fusion_width}
    homography = _calibration(args)
    if homography is not None:
        parameters.update(registration="homography",
                          homography=[float(v) for v in homography.reshape(-1)])
    return parameters
