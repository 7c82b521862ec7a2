"""Fusion under jitter: a 30 Hz RGB camera with a slower, jittery, lossy thermal camera.

The cameras: RGB 640x480 rgb8 at 30 Hz; IR 640x512 mono16 at 8.7 Hz whose stamps jitter
by +-5 ms (uniform) around the camera's period, 10% of whose frames are lost (never
published), and whose frames are published 30 ms after their stamp (thermal cameras
deliver late). Both are stamped from the publisher node's clock and published from a
schedule by one 5 ms timer, in a process of their own with the middleware's default
transport (as camera drivers run: within one process frames would skip the transport);
camera publishers are reliable, depth 10 (a typical driver; ``--camera-qos best_effort``
tries the other kind). Frames due in the same tick go RGB first, or IR first with
``--publish-order ir-first``.

The perception node runs with the default parameters (config/perception.yaml: slop, QoS,
ir_max_wait, ir_timeout, stale_after untouched) except the model, ``--checkpoint`` (the
demo weights by default; ``--model-config`` runs an untrained config instead) and
``device: cpu``, in this process with the DDS transport its entry point chooses
(`ivtuning_ros.ros.transport`). After a warm-up of 3 s that is not counted, for
``--duration`` seconds
we record every output's fusion state (``~/fusion_state``, stamped like the RGB frame it
answers) and its age (receipt time minus the RGB stamp). An output *has a partner* when
a published IR frame lies within ``slop`` of its RGB stamp, and a *timely partner* when
such a frame also reached the node's pairer no later than ``ir_max_wait`` after the RGB
frame did (later, the node has rightly moved on: on a loaded machine delivery can take
that long). The node should fuse those with a timely partner (target >= 98%); partners
that came late are counted apart. Frames received by the node are counted exactly over the
whole camera run (the node's counters), and each frame handed to its pairer is logged with
its receipt time. Prints one JSON object on stdout; progress goes to stderr.

    .venv/bin/python benchmarks/fusion_under_jitter.py --duration 40
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.context import Context
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from ivtuning_ros.ros.conversions import fill_image
from ivtuning_ros.ros.node import PerceptionNode, stamp_ns
from ivtuning_ros.ros.pairing import Frame, FramePairer
from ivtuning_ros.ros.params import package_dir
from ivtuning_ros.ros.spinning import spinning
from ivtuning_ros.ros.transport import TRANSPORT_VARIABLE, choose_transport, kernel_rmem_max

NAME = "ivtuning_perception"
RGB_HZ, IR_HZ = 30.0, 8.7
RGB_PERIOD_NS, IR_PERIOD_NS = round(1e9 / RGB_HZ), round(1e9 / IR_HZ)
IR_JITTER_NS = 5_000_000
IR_DROP = 0.1
IR_DELIVERY_NS = 30_000_000
TICK_S = 0.005  # the cameras' schedule timer
WARMUP_S = 3.0
DRAIN_S = 1.5  # after the cameras stop: the last outputs arrive
CAMERAS_TIMEOUT_S = 30.0  # the camera process's start and discovery, beyond its run
AGE_WINDOW_NS = 10_000_000_000
STREAMS = ("rgb", "ir")
PUBLISH_ORDERS = {"rgb-first": STREAMS, "ir-first": STREAMS[::-1]}
RELIABILITY = {"reliable": ReliabilityPolicy.RELIABLE,
               "best_effort": ReliabilityPolicy.BEST_EFFORT}
RELIABILITY_NAMES = {policy: name for name, policy in RELIABILITY.items()}
LEVELS = {DiagnosticStatus.OK: "OK", DiagnosticStatus.WARN: "WARN",
          DiagnosticStatus.ERROR: "ERROR", DiagnosticStatus.STALE: "STALE"}


def log(message: str) -> None:
    print(f"[fusion_under_jitter] {message}", file=sys.stderr, flush=True)


def to_time(ns: int) -> Time:
    return Time(sec=ns // 10**9, nanosec=ns % 10**9)


class Cameras(Node):
    """Both cameras, published from a schedule (stamps on this node's clock) by one timer."""

    def __init__(self, context: Context, qos: QoSProfile, seed: int,
                 order: tuple[str, str] = STREAMS) -> None:
        super().__init__("cameras", context=context)
        self.order = order  # of the frames due in one tick
        self.rng = np.random.default_rng(seed)
        self.rgb, self.ir = Image(), Image()
        fill_image(self.rgb, self.rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), "rgb8")
        fill_image(self.ir, self.rng.integers(20000, 40000, (512, 640), dtype=np.uint16),
                   "mono16")
        self.rgb.header.frame_id, self.ir.header.frame_id = "rgb_optical_frame", "ir_optical_frame"
        self.publishers_ = {"rgb": self.create_publisher(Image, f"/{NAME}/rgb/image", qos),
                            "ir": self.create_publisher(Image, f"/{NAME}/ir/image", qos)}
        self.sent: dict[str, list[int]] = {"rgb": [], "ir": []}  # stamps, ns
        self.ir_dropped: list[int] = []  # stamps of IR frames never published
        self.ir_delays_ms: list[float] = []  # publish time minus stamp
        self.running = False
        self.create_timer(TICK_S, self._tick)

    def now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def start(self) -> None:
        self._origin_ns = self.now_ns()
        self._rgb_index, self._ir_index = 0, 0
        self._ir_stamp = self._draw_ir_stamp()
        self.running = True

    def stop(self) -> int:
        self.running = False
        return self.now_ns()

    def _draw_ir_stamp(self) -> int:
        jitter = int(self.rng.uniform(-IR_JITTER_NS, IR_JITTER_NS))
        return self._origin_ns + self._ir_index * IR_PERIOD_NS + jitter

    def _tick(self) -> None:
        if not self.running:
            return
        now = self.now_ns()
        for stream in self.order:
            if stream == "rgb":
                self._publish_due_rgb(now)
            else:
                self._publish_due_ir(now)

    def _publish_due_rgb(self, now: int) -> None:
        while (stamp := self._origin_ns + self._rgb_index * RGB_PERIOD_NS) <= now:
            self._publish("rgb", self.rgb, stamp)
            self._rgb_index += 1

    def _publish_due_ir(self, now: int) -> None:
        while self._ir_stamp + IR_DELIVERY_NS <= now:
            if self.rng.random() < IR_DROP:
                self.ir_dropped.append(self._ir_stamp)
            else:
                self._publish("ir", self.ir, self._ir_stamp)
                self.ir_delays_ms.append((self.now_ns() - self._ir_stamp) / 1e6)
            self._ir_index += 1
            self._ir_stamp = self._draw_ir_stamp()

    def _publish(self, stream: str, msg: Image, stamp: int) -> None:
        msg.header.stamp = to_time(stamp)
        self.publishers_[stream].publish(msg)
        self.sent[stream].append(stamp)


@dataclass
class Output:
    received_ns: int
    stamp_ns: int
    fused: bool
    reason: str


class Recorder(Node):
    """Every output's fusion state as a client sees it, and the node's /diagnostics."""

    def __init__(self, context: Context) -> None:
        super().__init__("recorder", context=context)
        self.outputs: list[Output] = []
        self.diagnostics: list[tuple[int, DiagnosticStatus]] = []  # (header stamp, status)
        deep = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(DiagnosticArray, f"/{NAME}/fusion_state", self._on_state, deep)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    def _on_state(self, msg: DiagnosticArray) -> None:
        values = {kv.key: kv.value for kv in msg.status[0].values}
        self.outputs.append(Output(self.get_clock().now().nanoseconds,
                                   stamp_ns(msg.header.stamp), values["ir_used"] == "true",
                                   values["rgb_only_reason"]))

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            if status.name.startswith(f"{NAME}:"):
                self.diagnostics.append((stamp_ns(msg.header.stamp), status))


class PairerInput:
    """Every frame the node hands its pairer, per stream: stamp -> receipt time (ns). The
    pairer's input methods are wrapped in place; they behave as before."""

    def __init__(self, pairer: FramePairer) -> None:
        self.received: dict[str, dict[int, int]] = {s: {} for s in STREAMS}
        for stream in STREAMS:
            name = f"add_{stream}"
            setattr(pairer, name, self._logging(stream, getattr(pairer, name)))

    def _logging(self, stream: str, add: Callable[[Frame], bool]) -> Callable[[Frame], bool]:
        def add_and_log(frame: Frame) -> bool:
            self.received[stream][frame.stamp_ns] = frame.received_ns
            return add(frame)
        return add_and_log


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def start_node(context: Context, args: argparse.Namespace) -> PerceptionNode:
    """The node with the default parameters but the model and the device; active."""
    # An untrained config is asked for knowingly: pairing does not depend on the weights.
    model = ([Parameter("model_config", value=args.model_config),
              Parameter("allow_untrained", value=True)] if args.model_config
             else [Parameter("checkpoint", value=args.checkpoint)])
    node = PerceptionNode(context=context,
                          parameter_overrides=[*model, Parameter("device", value="cpu")])
    for transition in (node.trigger_configure, node.trigger_activate):
        if transition() != TransitionCallbackReturn.SUCCESS:
            raise SystemExit(f"the node did not start: {node._state}")
    return node


def recorded(node: PerceptionNode) -> bool:
    """The recorder receives the node's fusion state and diagnostics."""
    return (node._publishers_["fusion_state"].get_subscription_count() > 0
            and node._diagnostics.get_subscription_count() > 0)


def followed(cameras: Cameras, reliability: ReliabilityPolicy) -> bool:
    """The node subscribes to both cameras with their QoS (it follows the publishers')."""
    infos = [cameras.get_subscriptions_info_by_topic(p.topic_name)
             for p in cameras.publishers_.values()]
    return all(i and all(s.qos_profile.reliability == reliability for s in i) for i in infos)


@dataclass
class CameraRecord:
    """What the camera process sent (`Cameras`' record, from its JSON line)."""

    sent: dict[str, list[int]]
    ir_dropped: list[int]
    ir_delays_ms: list[float]


def in_window(stamps: list[int], window: tuple[int, int]) -> list[int]:
    return [s for s in stamps if window[0] <= s < window[1]]


def camera_report(cameras: CameraRecord, received: dict[str, int], window: tuple[int, int],
                  duration: float) -> dict:
    """Per camera: published in the measured window (and the expected count), and over the
    whole run (warm-up included) published, received by the node and lost."""
    report = {}
    for stream, hz in (("rgb", RGB_HZ), ("ir", IR_HZ)):
        sent = len(cameras.sent[stream])
        report[stream] = {
            "hz": hz, "published": len(in_window(cameras.sent[stream], window)),
            "expected": round(hz * duration * (1 - IR_DROP if stream == "ir" else 1), 1),
            "whole_run": {"published": sent, "received_by_node": received[stream],
                          "lost": sent - received[stream]}}
    delays = np.array(cameras.ir_delays_ms)
    report["ir"].update({
        "dropped_by_camera": len(in_window(cameras.ir_dropped, window)),
        "stamp_jitter_ms": IR_JITTER_NS / 1e6,
        "publish_delay_ms": {"p50": round(float(np.median(delays)), 1),
                             "max": round(float(delays.max()), 1)}})
    return report


def fusion_report(outputs: list[Output], ir_stamps: list[int], pairer_input: PairerInput,
                  slop_ns: int, max_wait_ns: int) -> dict:
    """Outputs by fusion state, and how many of those with an IR partner (a timely one) were
    fused; for the partners that came late, how late (ms after the RGB frame's wait ended)."""
    reasons = Counter(o.reason for o in outputs if not o.fused)
    fused = sum(o.fused for o in outputs)
    ir = np.array(sorted(ir_stamps), dtype=np.int64)
    partnered = [o for o in outputs if nearest_gap(ir, o.stamp_ns) <= slop_ns]
    rgb_received, ir_received = pairer_input.received["rgb"], pairer_input.received["ir"]
    never = 1 << 62

    def lateness_ns(output: Output) -> int:
        """How long after the end of the RGB frame's wait its first partner arrived."""
        arrivals = [ir_received.get(s, never) for s in ir_stamps
                    if abs(s - output.stamp_ns) <= slop_ns]
        return min(arrivals) - (rgb_received[output.stamp_ns] + max_wait_ns)

    late = {o.stamp_ns: lateness_ns(o) for o in partnered}
    timely = [o for o in partnered if late[o.stamp_ns] <= 0]
    came_late = sorted(late[o.stamp_ns] for o in partnered if late[o.stamp_ns] > 0)
    return {"outputs": {"total": len(outputs), "fused": fused, "rgb_only": dict(reasons)},
            "fused_fraction": round(fused / len(outputs), 3) if outputs else None,
            "with_partner": len(partnered),
            "fused_of_with_partner": fraction_fused(partnered),
            "with_timely_partner": len(timely),
            "fused_of_with_timely_partner": fraction_fused(timely),
            "partner_came_late_ms": [round(ns / 1e6, 1) if ns < never // 2 else "never"
                                     for ns in came_late]}


def fraction_fused(outputs: list[Output]) -> float | None:
    return round(sum(o.fused for o in outputs) / len(outputs), 4) if outputs else None


def nearest_gap(sorted_stamps: np.ndarray, stamp: int) -> int:
    i = int(np.searchsorted(sorted_stamps, stamp))
    return min((abs(int(sorted_stamps[j]) - stamp) for j in (i - 1, i)
                if 0 <= j < len(sorted_stamps)), default=1 << 62)


def age_report(outputs: list[Output], window: tuple[int, int]) -> dict:
    """Result age (receipt minus RGB stamp) over the first and the last 10 s measured."""
    start, end = window
    spans = {"first_10_s": (start, start + AGE_WINDOW_NS), "last_10_s": (end - AGE_WINDOW_NS, end)}
    report = {}
    for name, (low, high) in spans.items():
        ages = [(o.received_ns - o.stamp_ns) / 1e6 for o in outputs if low <= o.stamp_ns < high]
        p50, p99 = np.percentile(ages, [50, 99]) if ages else (np.nan, np.nan)
        report[name] = {"outputs": len(ages), "p50": round(float(p50), 1),
                        "p99": round(float(p99), 1)}
    return report


def diagnostics_report(recorder: Recorder, end_ns: int) -> dict:
    """The node's last /diagnostics status while the cameras ran (after they stop, IR goes
    silent and the node rightly warns)."""
    while_running = [status for stamp, status in recorder.diagnostics if stamp <= end_ns]
    if not while_running:
        return {"level": None, "message": "no /diagnostics received", "values": {}}
    status = while_running[-1]
    return {"level": LEVELS.get(status.level, repr(status.level)), "message": status.message,
            "values": {kv.key: kv.value for kv in status.values}}


def setup_report(node: PerceptionNode, args: argparse.Namespace) -> dict:
    """The model and its processing time (the node's last 10 s), the parameters in use and
    the pairer's counters (pairs superseded by newer ones, or stale)."""
    latency = node.stats.percentiles("latency")
    settings = node.settings
    return {
        "model": {"checkpoint": "" if args.model_config else Path(args.checkpoint).name,
                  "config": node.model_name, "processing_ms_p50": round(latency[0], 1),
                  "processing_ms_p99": round(latency[1], 1)},
        "parameters": {"slop_s": settings.slop, "ir_max_wait_s": settings.ir_max_wait,
                       "ir_timeout_s": settings.ir_timeout,
                       "stale_after_s": settings.stale_after,
                       "qos_reliability": settings.qos_reliability,
                       "qos_depth": settings.qos_depth,
                       "qos_chosen": {s: RELIABILITY_NAMES[node._image_qos[s]]
                                      for s in STREAMS}},
        "pairs": dict(node._pairer.counters)}


def stream(cameras: Cameras, duration: float) -> tuple[int, int]:
    """Cameras on: a warm-up, then ``duration`` s measured; returns the measured window
    (stamps, ns)."""
    cameras.start()
    log(f"cameras on; warm-up {WARMUP_S:g} s, then {duration:g} s measured")
    time.sleep(WARMUP_S)
    start_ns = cameras.now_ns()
    time.sleep(duration)
    return start_ns, cameras.stop()


def run_cameras(args: argparse.Namespace) -> None:
    """The camera process (``--cameras-only``): once the node follows the cameras' QoS, a
    warm-up and ``--duration`` s; prints the window and the record as one JSON line."""
    qos = QoSProfile(depth=10, reliability=RELIABILITY[args.camera_qos])
    context = Context()
    rclpy.init(context=context)
    try:
        cameras = Cameras(context, qos, args.seed, PUBLISH_ORDERS[args.publish_order])
        with spinning(context, [cameras]):
            wait_for(lambda: followed(cameras, qos.reliability), "the node's subscriptions")
            window = stream(cameras, args.duration)
        cameras.destroy_node()
    finally:
        context.try_shutdown()
    print(json.dumps({"window": window, "sent": cameras.sent, "ir_dropped": cameras.ir_dropped,
                      "ir_delays_ms": cameras.ir_delays_ms}))


def camera_process(args: argparse.Namespace,
                   environ: dict[str, str]) -> tuple[CameraRecord, tuple[int, int]]:
    """Run `run_cameras` in a process of its own with ``environ``; its record and window."""
    command = [sys.executable, str(Path(__file__).resolve()), "--cameras-only",
               "--duration", str(args.duration), "--camera-qos", args.camera_qos,
               "--publish-order", args.publish_order, "--seed", str(args.seed)]
    run = subprocess.run(command, env=environ, stdout=subprocess.PIPE, text=True, check=False,
                         timeout=WARMUP_S + args.duration + CAMERAS_TIMEOUT_S)
    if run.returncode != 0:
        raise SystemExit(f"the camera process failed with exit code {run.returncode}")
    record = json.loads(run.stdout)
    window = record.pop("window")
    return CameraRecord(**record), (window[0], window[1])


def measure(context: Context, args: argparse.Namespace, camera_environ: dict[str, str]) -> dict:
    recorder = Recorder(context)
    log("loading the model and starting the node")
    node = start_node(context, args)
    pairer_input = PairerInput(node._pairer)
    try:
        with spinning(context, [node, recorder]):
            wait_for(lambda: recorded(node), "discovery")
            cameras, window = camera_process(args, camera_environ)
            setup = setup_report(node, args)
            time.sleep(DRAIN_S)
        node._stop()
    finally:
        for each in (node, recorder):
            each.destroy_node()
    rgb_sent = set(cameras.sent["rgb"])
    outputs = [o for o in recorder.outputs
               if window[0] <= o.stamp_ns < window[1] and o.stamp_ns in rgb_sent]
    parameters = setup["parameters"]
    slop_ns, max_wait_ns = (round(parameters[k] * 1e9) for k in ("slop_s", "ir_max_wait_s"))
    return {"scenario": scenario_report(args, os.environ.get(TRANSPORT_VARIABLE, "")),
            "cameras": camera_report(cameras, dict(node.stats.received), window,
                                     args.duration),
            **fusion_report(outputs, cameras.sent["ir"], pairer_input, slop_ns, max_wait_ns),
            "result_age_ms": age_report(outputs, window),
            "diagnostics": diagnostics_report(recorder, window[1]),
            **setup}


def scenario_report(args: argparse.Namespace, node_transport: str) -> dict:
    return {"rgb": f"640x480 rgb8 at {RGB_HZ:g} Hz",
            "ir": (f"640x512 mono16 at {IR_HZ:g} Hz, +-{IR_JITTER_NS / 1e6:g} ms stamp "
                   f"jitter, {IR_DROP:.0%} dropped, published {IR_DELIVERY_NS / 1e6:g} ms "
                   "after the stamp"),
            "camera_qos": f"{args.camera_qos}, depth 10",
            "publish_order": args.publish_order,
            "node_transport": f"{TRANSPORT_VARIABLE}={node_transport}" if node_transport
            else "the middleware's default",
            "warmup_s": WARMUP_S, "duration_s": args.duration, "seed": args.seed}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=40.0, help="measured seconds")
    parser.add_argument("--camera-qos", choices=tuple(RELIABILITY), default="reliable")
    parser.add_argument("--checkpoint", default=str(package_dir("models") / "ivt_demo.pth"))
    parser.add_argument("--model-config", default="",
                        help="run this (untrained) model config instead of the checkpoint, "
                             "e.g. ivt_tiny_test.yaml")
    parser.add_argument("--publish-order", choices=tuple(PUBLISH_ORDERS), default="rgb-first",
                        help="which camera's frames go first when both are due in one tick")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cameras-only", action="store_true",
                        help="be the camera process (the benchmark starts it)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.cameras_only:
        run_cameras(args)
        return
    camera_environ = dict(os.environ)  # the cameras keep the middleware's defaults
    # As the node's entry point does, before this process's first node.
    transport = choose_transport(os.environ, kernel_rmem_max())
    os.environ.update(transport.environment)
    if transport.message:
        log(transport.message)
    context = Context()
    rclpy.init(context=context)
    try:
        report = measure(context, args, camera_environ)
    finally:
        context.try_shutdown()
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
