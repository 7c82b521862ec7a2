"""Fusion over real DDS: both publish orders at 5/10/30 Hz (cameras in the test's process,
and in a process of their own), a slower thermal camera with jitter and drops, lost frames
(no latch), an IR clock offset, QoS that follows the camera publishers, and the fusion
state each output carries (``~/fusion_state``)."""
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from ivtuning_ros.ros.conversions import fill_image  # noqa: E402
from ivtuning_ros.ros.spinning import spinning  # noqa: E402
from ivtuning_ros.ros.transport import (  # noqa: E402
    SOCKET_BUFFER_BYTES,
    TRANSPORT_VARIABLE,
    kernel_rmem_max,
)

from ..process import CollectedProcess  # noqa: E402
from .harness import Harness  # noqa: E402
from .test_entry_point import TINY, NodeProcess  # noqa: E402

SLOP_NS = 20_000_000
SMALL_RGB, SMALL_IR = (240, 320), (128, 160)
CAMERA_PROCESS = Path(__file__).with_name("camera_process.py")


def small_image(shape, encoding, frame_id, seed=0) -> Image:
    msg = Image()
    msg.header.frame_id = frame_id
    rng = np.random.default_rng(seed)
    data = (rng.integers(0, 256, (*shape, 3), dtype=np.uint8) if encoding == "rgb8"
            else rng.integers(20000, 40000, shape, dtype=np.uint16))
    fill_image(msg, data, encoding)
    return msg


def to_time(ns: int) -> Time:
    return Time(sec=ns // 10**9, nanosec=ns % 10**9)


class Rig:
    """Publishes the two cameras from the test thread on a schedule of (send time, stream,
    stamp); records what it sent."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.rgb = small_image(SMALL_RGB, "rgb8", "rgb_optical_frame")
        self.ir = small_image(SMALL_IR, "mono16", "ir_optical_frame")
        self.sent = {"rgb": [], "ir": []}

    def play(self, schedule: list[tuple[float, str, int]]) -> None:
        start = time.monotonic()
        for at, stream, stamp in sorted(schedule, key=lambda e: e[0]):
            delay = start + at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            msg, publisher = ((self.rgb, self.harness.rgb_pub) if stream == "rgb"
                              else (self.ir, self.harness.ir_pub))
            msg.header.stamp = to_time(stamp)
            publisher.publish(msg)
            self.sent[stream].append(stamp)
        time.sleep(0.5)  # the last frames go through

    def reports_between(self, start_ns: int, end_ns: int) -> list[DiagnosticStatus]:
        """The node's /diagnostics statuses stamped in [start_ns, end_ns]."""
        with self.harness._lock:
            reports = list(self.harness.received["diagnostics"])
        return [m.status[0] for m in reports
                if start_ns <= m.header.stamp.sec * 10**9 + m.header.stamp.nanosec <= end_ns]

    def outputs_since(self, start_ns: int) -> list[dict]:
        return [s for s in self.harness.fusion_states() if s["stamp_ns"] >= start_ns]


def now_ns(harness: Harness) -> int:
    return harness.client.get_clock().now().nanoseconds


def both_cameras(start_ns: int, hz: float, seconds: float, ir_first: bool, skip=()):
    """Identical stamps; one stream published 0.2 ms before the other."""
    schedule = []
    for i in range(int(hz * seconds)):
        at = i / hz
        stamp = start_ns + int(at * 1e9)
        first, second = ("ir", "rgb") if ir_first else ("rgb", "ir")
        for stream, delay in ((first, 0.0), (second, 0.0002)):
            if (stream, i) not in skip:
                schedule.append((at + delay, stream, stamp))
    return schedule


@pytest.fixture
def rig(ros_context):
    # The default ir_timeout: the pauses between scenarios must not read as IR silence.
    harness = Harness(ros_context, outputs=("detections", "fusion_state"), ir_timeout=1.0)
    yield Rig(harness)
    harness.close()


def test_both_publish_orders_fuse_at_5_10_and_30_hz(rig):
    for hz in (5, 10, 30):
        for ir_first in (True, False):
            start = now_ns(rig.harness) + 100_000_000
            rig.play(both_cameras(start, hz, 2.0, ir_first))
            outputs = rig.outputs_since(start)
            assert len(outputs) >= 5, (hz, ir_first)
            fused = sum(o["ir_used"] == "true" for o in outputs)
            assert fused / len(outputs) >= 0.99, (hz, ir_first, outputs)


def test_lost_ir_then_lost_rgb_does_not_latch(rig):
    start = now_ns(rig.harness) + 100_000_000
    rig.play(both_cameras(start, 10, 3.0, ir_first=False, skip={("ir", 5), ("rgb", 7)}))
    outputs = rig.outputs_since(start)
    alone = [o for o in outputs if o["ir_used"] == "false"]
    # Frame 5 (its IR lost) runs RGB-only, or is superseded by frame 6 when both settle at
    # once (latest pair wins); every other frame fuses: nothing latches.
    assert {o["stamp_ns"] for o in alone} <= {start + 500_000_000}, alone
    assert all(o["rgb_only_reason"] == "no_ir_within_slop" for o in alone)
    assert len(outputs) >= 25


def test_slow_thermal_camera_fuses_every_frame_that_has_a_partner(rig):
    rng = random.Random(0)
    start = now_ns(rig.harness) + 100_000_000
    schedule = [(i / 30, "rgb", start + int(i / 30 * 1e9)) for i in range(120)]
    ir_stamps = []
    for i in range(35):  # 4 s
        at = i / 8.7 + rng.uniform(-0.005, 0.005)
        if rng.random() < 0.1:
            continue  # 10% of thermal frames lost
        stamp = start + int(at * 1e9)
        ir_stamps.append(stamp)
        schedule.append((max(at, 0.0) + 0.03, "ir", stamp))  # thermal frames arrive late
    rig.play(schedule)
    outputs = rig.outputs_since(start)
    with_partner = [o for o in outputs
                    if min(abs(o["stamp_ns"] - s) for s in ir_stamps) <= SLOP_NS]
    assert len(with_partner) >= 10
    fused = [o for o in with_partner if o["ir_used"] == "true"]
    assert len(fused) / len(with_partner) >= 0.98
    alone = {o["rgb_only_reason"] for o in outputs if o["ir_used"] == "false"}
    assert alone <= {"no_ir_within_slop"}
    # A healthy slower camera is not a warning: every report while it streamed says OK.
    reports = rig.reports_between(start + 1_500_000_000, start + 4_000_000_000)
    assert len(reports) >= 2
    assert all(r.level == DiagnosticStatus.OK for r in reports), [r.message for r in reports]
    values = {kv.key: kv.value for kv in reports[-1].values}
    assert values["ir_state"] == "fused" and float(values["fused_fraction"]) > 0.2


def test_ir_clock_offset_is_named_and_heals(rig):
    harness = rig.harness
    start = now_ns(harness) + 100_000_000
    schedule = [(at, s, stamp + (3 * 10**9 if s == "ir" else 0))
                for at, s, stamp in both_cameras(start, 10, 3.0, ir_first=True)]
    rig.play(schedule)
    outputs = rig.outputs_since(start)
    late = outputs[len(outputs) // 2:]
    assert late and all(o["ir_used"] == "false" for o in late)
    assert {o["rgb_only_reason"] for o in late} == {"ir_clock_offset"}
    # The reports while the offset IR streamed (not after: then IR is simply silent).
    reports = rig.reports_between(start + 1_500_000_000, start + 3_000_000_000)
    warnings = [r for r in reports if r.level == DiagnosticStatus.WARN and "off RGB" in r.message]
    assert warnings, [r.message for r in reports]
    values = {kv.key: kv.value for kv in warnings[-1].values}
    assert abs(float(values["ir_stamp_offset_ms"]) - 3000) < 200
    assert values["fused_fraction"] == "0.000"
    # The clock is fixed: fusion resumes within a second or so, nothing sticky.
    start = now_ns(harness) + 100_000_000
    rig.play(both_cameras(start, 10, 3.0, ir_first=True))
    assert all(o["ir_used"] == "true" for o in rig.outputs_since(start)[-10:])


@pytest.mark.parametrize("reliability", [ReliabilityPolicy.BEST_EFFORT,
                                         ReliabilityPolicy.RELIABLE])
def test_auto_qos_matches_best_effort_and_reliable_cameras(ros_context, reliability):
    harness = Harness(ros_context, camera_qos=QoSProfile(depth=5, reliability=reliability),
                      outputs=("detections", "fusion_state"))
    try:
        expected = "reliable" if reliability == ReliabilityPolicy.RELIABLE else "best_effort"
        harness.wait_for(lambda: harness.node._image_qos.get("rgb") == reliability
                         and harness.node._image_qos.get("ir") == reliability, "QoS follows")
        harness.send_and_wait("detections")
        _, _, values = harness.diagnostics()
        assert values["rgb_qos"] == values["ir_qos"] == expected
    finally:
        harness.close()


def test_cameras_in_their_own_process_fuse_in_either_publish_order(ros_context, tmp_path,
                                                                  monkeypatch):
    """Issue 23: RGB 640x480 rgb8 and IR 640x512 mono16 stamped alike, from a process of
    their own, the node as `ros2 run` starts it (defaults, the tiny model): at 5, 10 and
    30 Hz, >= 99% of outputs fused whichever camera publishes first. Under the default
    shared-memory transport the frame published just before the large RGB one was lost
    while the model ran, below the node's callbacks (ivtuning_ros/ros/transport.py): with
    IR first, 10-40% of outputs fused at 5 Hz here (10-80% with 160x120 IR).

    Where the kernel caps socket buffers below 4 MiB (stock: 212992 bytes) the node takes
    UDP at that cap, which loses about one datagram burst in 300 (99.7% fused over 12 runs
    here): with 10 pairs at 5 Hz one loss fails a rate, so there each publish order must
    fuse >= 97% over its three rates (shared memory: 30-90% with IR first)."""
    rmem_max = kernel_rmem_max()
    full_buffers = rmem_max is not None and rmem_max >= SOCKET_BUFFER_BYTES
    # The launch tests limit discovery to this host for the whole session; the middleware
    # then ignores the node's transport (`localhost_only`): these processes discover as a
    # robot's usually do.
    monkeypatch.delenv("ROS_AUTOMATIC_DISCOVERY_RANGE", raising=False)
    client = rclpy.create_node("fusion_client", context=ros_context)
    states = []
    client.create_subscription(
        DiagnosticArray, "/robot/ivtuning_perception/fusion_state", states.append,
        QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
    node = NodeProcess(tmp_path, **TINY)
    cameras = CollectedProcess(
        [sys.executable, str(CAMERA_PROCESS), "--rgb-topic", "/robot/front/rgb",
         "--ir-topic", "/robot/front/thermal", "--first", "ir", "rgb", "--seconds", "2",
         "--ir-size", "640x512"],
        {k: v for k, v in os.environ.items() if k != TRANSPORT_VARIABLE})
    try:
        with spinning(ros_context, [client]):
            cameras.wait_for_line("done", timeout=60)
            time.sleep(0.2)  # the last outputs
        assert node.process.poll() is None, node.output
    finally:
        node.stop()
        cameras.kill()
        client.destroy_node()
    fused = {}
    for line in cameras.lines:
        if line.startswith("{"):
            run = json.loads(line)
            sent = set(run["stamps"])
            outputs = [m.status[0].values for m in states
                       if m.header.stamp.sec * 10**9 + m.header.stamp.nanosec in sent]
            used = [next(kv.value for kv in values if kv.key == "ir_used") == "true"
                    for values in outputs]
            fused[(run["first"], run["hz"])] = (sum(used), len(used), len(sent))
    assert len(fused) == 6, cameras.output
    for (first, hz), (count, outputs, sent) in fused.items():
        assert outputs >= min(5, sent), (first, hz, fused)
        assert not full_buffers or count / outputs >= 0.99, (first, hz, fused)
    for first in ("ir", "rgb"):
        runs = [run for (order, _), run in fused.items() if order == first]
        assert sum(r[0] for r in runs) / sum(r[1] for r in runs) >= 0.97, (first, fused)
