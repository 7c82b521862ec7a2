"""Result age under overload: the perception node vs a naive queue-everything node.

Cameras publish RGB (1280x720 rgb8) + IR (640x512 mono16) pairs at --camera-hz while
the model needs longer than a frame period. For each design we record the age of
every published result (receipt time minus the RGB stamp) over --duration seconds.
The node (latest pair wins, stale pairs dropped) keeps ages bounded; the naive node
(reliable deep queues, inference in the subscription callback, every frame processed)
falls further behind every second. Prints one JSON object, including the node's own
per-frame overhead (conversion, pairing, publishing; the engine excluded).

    .venv/bin/python benchmarks/latency_under_load.py --duration 20
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray

from ivtuning_ros.model import build_model, load_config
from ivtuning_ros.ros.conversions import fill_image, ir_from_image, rgb_from_image
from ivtuning_ros.ros.node import PerceptionNode
from ivtuning_ros.ros.params import package_dir
from ivtuning_ros.ros.spinning import spinning
from ivtuning_ros.runtime import Engine, EngineOptions

RELIABLE_DEEP = QoSProfile(depth=10000, reliability=ReliabilityPolicy.RELIABLE)
WARMUP_S = 3.0


class Cameras(Node):
    """RGB + IR publishers at a fixed rate, stamped with the current time."""

    def __init__(self, context, namespace: str, hz: float, qos) -> None:
        super().__init__("cameras", context=context)
        rng = np.random.default_rng(0)
        self.rgb = Image()
        fill_image(self.rgb, rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8), "rgb8")
        self.ir = Image()
        fill_image(self.ir, rng.integers(20000, 40000, (512, 640), dtype=np.uint16), "mono16")
        self.rgb.header.frame_id, self.ir.header.frame_id = "rgb", "ir"
        self.rgb_pub = self.create_publisher(Image, f"{namespace}/rgb/image", qos)
        self.ir_pub = self.create_publisher(Image, f"{namespace}/ir/image", qos)
        self.create_timer(1.0 / hz, self._tick)
        self.running = False

    def _tick(self) -> None:
        if not self.running:
            return
        stamp = self.get_clock().now().to_msg()
        self.rgb.header.stamp = self.ir.header.stamp = stamp
        self.rgb_pub.publish(self.rgb)
        self.ir_pub.publish(self.ir)


class Recorder(Node):
    """Ages of results as a client sees them."""

    def __init__(self, context, topic: str) -> None:
        super().__init__("recorder", context=context)
        self.samples: list[tuple[float, float]] = []  # (seconds since start, age ms)
        self.start = time.monotonic()
        self.create_subscription(Detection2DArray, topic, self._on_result, RELIABLE_DEEP)

    def _on_result(self, msg: Detection2DArray) -> None:
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        age_ms = (self.get_clock().now().nanoseconds - stamp) / 1e6
        self.samples.append((time.monotonic() - self.start, age_ms))


class NaiveNode(Node):
    """Queue-everything design: deep reliable queues, inference inside the callback."""

    def __init__(self, context, engine: Engine) -> None:
        super().__init__("naive", context=context)
        self.engine = engine
        self.ir_by_stamp: dict[tuple[int, int], np.ndarray] = {}
        self.publisher = self.create_publisher(Detection2DArray, "/naive/detections",
                                               RELIABLE_DEEP)
        self.create_subscription(Image, "/naive/ir/image", self._on_ir, RELIABLE_DEEP)
        self.create_subscription(Image, "/naive/rgb/image", self._on_rgb, RELIABLE_DEEP)

    def _on_ir(self, msg: Image) -> None:
        self.ir_by_stamp[(msg.header.stamp.sec, msg.header.stamp.nanosec)] = ir_from_image(msg)

    def _on_rgb(self, msg: Image) -> None:
        ir = self.ir_by_stamp.pop((msg.header.stamp.sec, msg.header.stamp.nanosec), None)
        rgb, bgr = rgb_from_image(msg)
        self.engine.infer(rgb, ir, bgr=bgr)
        self.publisher.publish(Detection2DArray(header=msg.header))


def summarize(samples: list[tuple[float, float]]) -> dict:
    if len(samples) < 2:
        return {"outputs": len(samples)}
    seconds, ages = np.array(samples).T
    slope = float(np.polyfit(seconds, ages, 1)[0])
    p50, p95, p99 = np.percentile(ages, [50, 95, 99])
    return {"outputs": len(samples), "output_hz": round(len(samples) / np.ptp(seconds), 2),
            "age_ms": {"p50": round(float(p50), 1), "p95": round(float(p95), 1),
                       "p99": round(float(p99), 1), "max": round(float(ages.max()), 1)},
            "age_growth_ms_per_s": round(slope, 1)}


def run_design(context, design: Node, cameras: Cameras, recorder: Recorder,
               duration: float) -> list[tuple[float, float]]:
    """Spin the design, the cameras and the recorder on single-threaded executors of their
    own (a blocked design must not slow the cameras or the client; rclpy's multi-threaded
    executor busy-waits on the GIL while callbacks run) for ``duration`` seconds."""
    with spinning(context, [design, cameras, recorder]):
        time.sleep(1.0)  # discovery
        cameras.running = True
        time.sleep(WARMUP_S)  # the first frames set up kernels; ages count from here
        recorder.start = time.monotonic()
        recorder.samples.clear()
        time.sleep(duration)
        cameras.running = False
    return [s for s in recorder.samples if s[0] <= duration]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--camera-hz", type=float, default=30.0)
    parser.add_argument("--model-config", default="ivt_swin_t_realtime.yaml")
    parser.add_argument("--model-overrides", default="input.height=256 input.width=320",
                        help="sized so the CPU model is slower than the cameras")
    args = parser.parse_args()

    context = rclpy.Context()
    rclpy.init(context=context)
    best_effort = QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT)

    node = PerceptionNode(context=context, parameter_overrides=[
        Parameter("model_config", value=args.model_config),
        Parameter("model_overrides", value=args.model_overrides),
        Parameter("device", value="cpu"), Parameter("cuda_graphs", value=False)])
    node.trigger_configure()
    node.trigger_activate()
    cameras = Cameras(context, "/ivtuning_perception", args.camera_hz, best_effort)
    recorder = Recorder(context, "/ivtuning_perception/detections")
    ours = run_design(context, node, cameras, recorder, args.duration)
    processing = node.stats.percentiles("latency")
    overhead = node.stats.percentiles("overhead")
    dropped = dict(node._pairer.counters)
    node._stop()
    for each in (node, cameras, recorder):
        each.destroy_node()

    config = load_config(package_dir("models") / args.model_config,
                         args.model_overrides.split())
    engine = Engine(build_model(config), config, EngineOptions(device="cpu", score_threshold=0.3))
    engine.warmup()
    naive = NaiveNode(context, engine)
    cameras = Cameras(context, "/naive", args.camera_hz, RELIABLE_DEEP)
    recorder = Recorder(context, "/naive/detections")
    naive_samples = run_design(context, naive, cameras, recorder, args.duration)
    for each in (naive, cameras, recorder):
        each.destroy_node()
    context.try_shutdown()

    report = {
        "camera_hz": args.camera_hz, "duration_s": args.duration,
        "model": {"config": config.name, "input": [config.input.height, config.input.width],
                  "processing_ms_p50": round(processing[0], 1),
                  "processing_ms_p99": round(processing[1], 1)},
        "ours": {**summarize(ours), "dropped_pairs": dropped,
                 "node_overhead_ms": {"p50": round(overhead[0], 2),
                                      "p99": round(overhead[1], 2)}},
        "naive_queue_everything": summarize(naive_samples),
    }
    if "age_ms" in report["ours"]:
        report["ours_age_p99_over_processing_p50"] = round(
            report["ours"]["age_ms"]["p99"] / max(processing[0], 1e-6), 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
