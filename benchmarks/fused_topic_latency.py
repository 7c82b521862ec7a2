"""Detection latency with and without a ~/fused/image subscriber, side by side in one run.

The perception node runs the demo weights on the CPU; cameras publish RGB (1280x720) + IR
(640x512) pairs at --camera-hz. Phases of --phase seconds alternate between no subscriber
and one ~/fused/image subscriber (off, on, off, on); for each we record the age of every
detection result (receipt time minus the RGB stamp) and count the fused images. Prints one
JSON object: p50/p99 age per condition and their ratios (target: with/without <= 1.05).

    .venv/bin/python benchmarks/fused_topic_latency.py --phase 20
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import rclpy
from latency_under_load import RELIABLE_DEEP, Cameras, Recorder
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from ivtuning_ros.ros.node import PerceptionNode
from ivtuning_ros.ros.params import package_dir
from ivtuning_ros.ros.spinning import spinning

NODE = "/ivtuning_perception"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", type=float, default=20.0, help="seconds per phase")
    parser.add_argument("--camera-hz", type=float, default=4.0)
    parser.add_argument("--fusion-max-rate", type=float, default=1.0)
    parser.add_argument("--fusion-width", type=int, default=160)
    args = parser.parse_args()
    context = rclpy.Context()
    rclpy.init(context=context)
    node = PerceptionNode(context=context, parameter_overrides=[
        Parameter("checkpoint", value=str(package_dir("models") / "ivt_demo.pth")),
        Parameter("device", value="cpu"), Parameter("qos_reliability", value="reliable"),
        Parameter("fusion_max_rate", value=args.fusion_max_rate),
        Parameter("fusion_width", value=args.fusion_width)])
    node.trigger_configure()
    node.trigger_activate()
    cameras = Cameras(context, NODE, args.camera_hz, RELIABLE_DEEP)
    recorder = Recorder(context, f"{NODE}/detections")
    fused: list[float] = []
    phases: dict[str, list[float]] = {"without_subscriber": [], "with_subscriber": []}
    fused_per_phase: list[int] = []
    try:
        with spinning(context, [node, cameras, recorder]):
            time.sleep(1.0)
            cameras.running = True
            time.sleep(5.0)  # warm-up
            for name in ("without_subscriber", "with_subscriber") * 2:
                subscription = None
                if name == "with_subscriber":
                    subscription = recorder.create_subscription(
                        Image, f"{NODE}/fused/image", lambda m: fused.append(time.monotonic()),
                        10)
                    time.sleep(1.0)  # discovery
                before = len(fused)
                recorder.samples.clear()
                recorder.start = time.monotonic()
                time.sleep(args.phase)
                phases[name] += [age for _, age in recorder.samples]
                if subscription is not None:
                    recorder.destroy_subscription(subscription)
                    fused_per_phase.append(len(fused) - before)
                    time.sleep(1.0)
            cameras.running = False
    finally:
        node.trigger_deactivate()
        for each in (node, cameras, recorder):
            each.destroy_node()
        context.try_shutdown()
    report = {"camera_hz": args.camera_hz, "phase_s": args.phase,
              "fusion_max_rate": args.fusion_max_rate, "fusion_width": args.fusion_width}
    for name, ages in phases.items():
        p50, p99 = np.percentile(ages, [50, 99])
        report[name] = {"results": len(ages), "age_ms": {"p50": round(float(p50), 1),
                                                         "p99": round(float(p99), 1)}}
    off, on = report["without_subscriber"]["age_ms"], report["with_subscriber"]["age_ms"]
    report["ratio_with_vs_without"] = {k: round(on[k] / off[k], 3) for k in ("p50", "p99")}
    report["fused_images_per_s"] = round(sum(fused_per_phase) / (2 * args.phase), 2)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
