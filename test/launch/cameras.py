"""Two cameras in a process of their own: real RoadScene RGB-IR pairs (or synthetic scenes
where the data set is absent) published as sensor_msgs/Image at a fixed rate, both stamped
alike, as a co-located RGB + thermal rig does.

    python cameras.py --rgb-topic /cam/rgb --ir-topic /cam/ir --rate 5

Every frame is resized to one size, as a camera driver publishes one resolution.
"""
from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path

import cv2
import numpy as np
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import Image

from ivtuning_ros.ros.conversions import fill_image

ROADSCENE = Path(__file__).resolve().parents[3] / "shared" / "data" / "roadscene"
SIZE = (480, 320)  # width, height: about RoadScene's aligned crops
PAIRS = 8


def load_pairs(count: int = PAIRS) -> list[tuple[np.ndarray, np.ndarray]]:
    """(RGB uint8 HxWx3, IR HxW) pairs: RoadScene's aligned crops (8-bit IR), else synthetic
    scenes (16-bit IR counts)."""
    names = sorted((ROADSCENE / "cropinfrared").glob("*.jpg"))[:count]
    pairs = []
    for name in names:
        bgr = cv2.imread(str(ROADSCENE / "crop_LR_visible" / name.name), cv2.IMREAD_COLOR)
        ir = cv2.imread(str(name), cv2.IMREAD_GRAYSCALE)
        pairs.append((cv2.resize(bgr, SIZE)[..., ::-1].copy(), cv2.resize(ir, SIZE)))
    if pairs:
        return pairs
    from ivtuning_ros.data.synthetic import make_scene

    for seed in range(count):
        scene = make_scene(seed, "night", rgb_size=SIZE[::-1], ir_size=SIZE[::-1])
        pairs.append((scene.rgb, scene.ir))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rgb-topic", required=True)
    parser.add_argument("--ir-topic", required=True)
    parser.add_argument("--rate", type=float, default=5.0, help="pairs per second")
    args = parser.parse_args()
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    pairs = load_pairs()
    rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
    node = rclpy.create_node("test_cameras")
    qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
    publishers = {"rgb": node.create_publisher(Image, args.rgb_topic, qos),
                  "ir": node.create_publisher(Image, args.ir_topic, qos)}
    print(f"cameras: {len(pairs)} pairs at {args.rate:g} Hz", flush=True)
    index = 0
    while not stop.is_set():
        rgb, ir = pairs[index % len(pairs)]
        stamp = node.get_clock().now().to_msg()
        ir_encoding = "mono8" if ir.dtype == np.uint8 else "mono16"
        for stream, array, encoding in (("rgb", rgb, "rgb8"), ("ir", ir, ir_encoding)):
            msg = Image()
            msg.header.stamp, msg.header.frame_id = stamp, f"{stream}_optical_frame"
            fill_image(msg, array, encoding)
            publishers[stream].publish(msg)
        index += 1
        stop.wait(1.0 / args.rate)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
