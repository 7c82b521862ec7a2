"""A perception node under test plus a client node, talking over real DDS."""
from __future__ import annotations

import threading
import time
from collections import defaultdict
from contextlib import ExitStack

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from vision_msgs.msg import Detection2DArray, LabelInfo

from ivtuning_ros.ros.conversions import fill_image
from ivtuning_ros.ros.node import PerceptionNode
from ivtuning_ros.ros.spinning import spinning

NAME = "ivtuning_perception"
RGB_SIZE = (720, 1280)
IR_SIZE = (512, 640)
TEST_PARAMETERS = {"model_config": "ivt_tiny_test.yaml", "device": "cpu",
                   "allow_untrained": True, "score_threshold": 0.0, "ir_timeout": 0.4}
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
OUTPUTS = {"detections": Detection2DArray, "segmentation/mask": Image,
           "segmentation/color": Image, "debug_image": Image, "ir/registered": Image,
           "fusion_state": DiagnosticArray}


def rgb_image(stamp, frame_id="rgb_optical_frame", seed=0) -> Image:
    msg = Image()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    rng = np.random.default_rng(seed)
    fill_image(msg, rng.integers(0, 256, (*RGB_SIZE, 3), dtype=np.uint8), "rgb8")
    return msg


def ir_image(stamp, frame_id="ir_optical_frame", seed=0) -> Image:
    msg = Image()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    rng = np.random.default_rng(seed + 1000)
    fill_image(msg, rng.integers(20000, 40000, IR_SIZE, dtype=np.uint16), "mono16")
    return msg


class Harness:
    """Starts the node (configured and active) and a client with publishers/subscribers."""

    def __init__(self, context, camera_qos=10, outputs=tuple(OUTPUTS), **parameters) -> None:
        values = {**TEST_PARAMETERS, **parameters}
        self.node = PerceptionNode(context=context, parameter_overrides=[
            Parameter(k, value=v) for k, v in values.items()])
        self.client = rclpy.create_node("test_client", context=context)
        self.received: dict[str, list] = defaultdict(list)
        self._lock = threading.Lock()
        self.outputs = outputs
        for topic in outputs:
            self.subscribe(topic, OUTPUTS[topic])
        self.client.create_subscription(DiagnosticArray, "/diagnostics",
                                        lambda m: self._store("diagnostics", m), 10)
        compressed = values.get("use_compressed", False)
        kind, suffix = (CompressedImage, "/compressed") if compressed else (Image, "")
        self.rgb_pub = self.client.create_publisher(kind, f"/{NAME}/rgb/image{suffix}",
                                                    camera_qos)
        self.ir_pub = self.client.create_publisher(kind, f"/{NAME}/ir/image{suffix}", camera_qos)
        self.info_pubs = {s: self.client.create_publisher(CameraInfo, f"/{NAME}/{s}/camera_info",
                                                          10) for s in ("rgb", "ir")}
        # One single-threaded executor each, as `ros2 run` spins the node.
        self._spinning = ExitStack()
        self._spinning.enter_context(spinning(context, [self.node, self.client], 10.0))
        self.node.trigger_configure()
        self.node.trigger_activate()
        self.wait_for(lambda: self.rgb_pub.get_subscription_count() > 0
                      and self.ir_pub.get_subscription_count() > 0, "node subscriptions")
        self.wait_for(lambda: all(self.node.count_subscribers(f"/{NAME}/{t}") > 0
                                  for t in outputs), "client subscriptions")

    def subscribe(self, topic: str, kind, qos=10) -> None:
        self.client.create_subscription(kind, f"/{NAME}/{topic}",
                                        lambda m, t=topic: self._store(t, m), qos)

    def _store(self, topic: str, msg) -> None:
        with self._lock:
            self.received[topic].append(msg)

    def fusion_states(self) -> list[dict[str, str]]:
        """``~/fusion_state`` so far: the values of each message, plus its RGB ``stamp_ns``."""
        with self._lock:
            messages = list(self.received["fusion_state"])
        return [{**{kv.key: kv.value for kv in m.status[0].values},
                 "stamp_ns": m.header.stamp.sec * 10**9 + m.header.stamp.nanosec}
                for m in messages]

    def count(self, topic: str) -> int:
        with self._lock:
            return len(self.received[topic])

    def last(self, topic: str):
        with self._lock:
            return self.received[topic][-1]

    def now(self):
        return self.client.get_clock().now().to_msg()

    def send_pair(self, stamp=None, seed=0, ir_offset_ns=0, ir=True):
        stamp = stamp or self.now()
        self.rgb_pub.publish(rgb_image(stamp, seed=seed))
        if ir:
            ir_stamp = type(stamp)(sec=stamp.sec, nanosec=stamp.nanosec)
            total = ir_stamp.sec * 10**9 + ir_stamp.nanosec + ir_offset_ns
            ir_stamp.sec, ir_stamp.nanosec = divmod(total, 10**9)
            self.ir_pub.publish(ir_image(ir_stamp, seed=seed))
        return stamp

    def send_and_wait(self, topic: str = "detections", seed: int = 0, **kwargs):
        """Send pairs at 10 Hz (a camera's cadence, so IR never looks silent) until a new
        message arrives on ``topic``; return (stamp of the pair it answers, message)."""
        before = self.count(topic)
        deadline = time.monotonic() + 10
        sent = {}
        while time.monotonic() < deadline:
            stamp = self.send_pair(seed=seed, **kwargs)
            sent[(stamp.sec, stamp.nanosec)] = stamp
            end = time.monotonic() + 0.1
            while time.monotonic() < end:
                if self.count(topic) > before:
                    message = self.last(topic)
                    key = (message.header.stamp.sec, message.header.stamp.nanosec)
                    return sent.get(key, message.header.stamp), message
                time.sleep(0.01)
        raise AssertionError(f"nothing on {topic} within 10 s")

    def send_and_wait_fused(self, seed: int = 0, tries: int = 10):
        """`send_and_wait` on detections until an answer is fused RGB + IR (under load an
        RGB frame may settle RGB-only, and untrained weights then answer differently)."""
        for _ in range(tries):
            stamp, message = self.send_and_wait("detections", seed=seed)
            if self._fusion_state_of(message.header.stamp)["ir_used"] == "true":
                return stamp, message
        raise AssertionError(f"no fused answer in {tries} tries")

    def _fusion_state_of(self, stamp) -> dict[str, str]:
        """The ``~/fusion_state`` values of the output stamped ``stamp`` (published with it)."""
        stamp_ns = stamp.sec * 10**9 + stamp.nanosec

        def matching():
            return [s for s in self.fusion_states() if s["stamp_ns"] == stamp_ns]

        self.wait_for(matching, "the answer's fusion state")
        return matching()[0]

    def diagnostics(self, ir: bool | None = True) -> tuple[int, str, dict[str, str]]:
        """Level, message and values of the first diagnostics report stamped after this call.
        Meanwhile the cameras keep streaming at 10 Hz (RGB only with ``ir=False``)."""
        start = self.client.get_clock().now().nanoseconds
        deadline = time.monotonic() + 5

        def fresh():
            with self._lock:
                reports = [m for m in self.received["diagnostics"]
                           if m.header.stamp.sec * 10**9 + m.header.stamp.nanosec > start]
            return reports[0] if reports else None

        while fresh() is None:
            assert time.monotonic() < deadline, "no diagnostics within 5 s"
            if ir is not None:
                self.send_pair(ir=ir)
            time.sleep(0.1)
        status = fresh().status[0]
        return status.level, status.message, {kv.key: kv.value for kv in status.values}

    @staticmethod
    def wait_for(condition, what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.02)
        raise AssertionError(f"timed out waiting for {what}")

    def close(self) -> None:
        self._spinning.close()
        self.node._stop()
        self.node.destroy_node()
        self.client.destroy_node()


def label_info_subscriber(harness: Harness, topic: str = "label_info") -> None:
    harness.subscribe(topic, LabelInfo, LATCHED)
