"""Live replay of a bag: `replay_into_node` publishes its RGB and IR images, paced by their
log times, to a running perception node's inputs over DDS (or to a node it starts
in-process) and counts the node's answers. Bags are read by `bag`; `offline` runs the model
on one without DDS; `ivtuning replay` is `commands.replay`."""
from __future__ import annotations

import os
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import rclpy
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage
from tqdm import tqdm
from vision_msgs.msg import Detection2DArray

from .bag import (
    IMAGE_TYPES,
    IR_TOPIC,
    RGB_TOPIC,
    bag_files,
    bag_topics,
    image_streams,
    message_total,
    read_images,
)
from .node import PerceptionNode
from .params import NODE_NAME
from .spinning import spinning

MATCH_TIMEOUT_S = 30.0
DRAIN_IDLE_S = 3.0  # after the last message: stop waiting once the node is this long silent
REPLAY_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# A bag's stamps are from when it was recorded: the node must not refuse them as far from
# its clock (a node running elsewhere needs max_stamp_offset 0 or use_sim_time with /clock).
IN_PROCESS_PARAMETERS = {"qos_reliability": "reliable", "qos_depth": 10, "max_stamp_offset": 0.0}


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
    topics = bag_topics(files)
    streams = image_streams(topics, rgb_topic, ir_topic)
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
    with tqdm(total=message_total(files, [rgb_topic, ir_topic]), unit="msg", desc="replay",
              disable=not progress) as bar:
        for image in read_images(files, rgb_topic, ir_topic):
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
