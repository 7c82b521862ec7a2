"""An RGB + thermal camera pair in a process of its own, as camera drivers run: both
frames of a pair stamped alike and published back to back, one stream first, at one rate
after another. Reliable, depth 5 (a typical driver), the middleware's default transport.

    python test/ros/camera_process.py --rgb-topic /n/rgb/image --ir-topic /n/ir/image \
        --first ir rgb --rates 5 10 30 --seconds 2

It waits for a subscriber on both topics, streams ``--warmup`` seconds at 10 Hz (not
reported: the subscriber's first frames), then for each publish order each rate for
``--seconds``, with ``--pause`` after each, and prints one JSON line per order and rate,
``{"first": "ir", "hz": 5, "stamps": [...]}`` (the stamps sent, ns), then ``done``.
Imports no torch: it starts in about a second.
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import rclpy
from builtin_interfaces.msg import Time
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from ivtuning_ros.ros.conversions import fill_image

QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
MATCH_TIMEOUT_S = 20.0


def camera_image(height: int, width: int, encoding: str, frame_id: str) -> Image:
    """One noise frame, published again and again with new stamps."""
    rng = np.random.default_rng(0)
    data = (rng.integers(0, 256, (height, width, 3), dtype=np.uint8) if encoding == "rgb8"
            else rng.integers(20000, 40000, (height, width), dtype=np.uint16))
    msg = Image()
    msg.header.frame_id = frame_id
    fill_image(msg, data, encoding)
    return msg


def size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` -> (height, width)."""
    width, height = (int(v) for v in text.lower().split("x"))
    return height, width


def stream(node, publishers: dict, images: dict, first: str, hz: float,
           seconds: float) -> list[int]:
    """Publish pairs at ``hz`` for ``seconds``; the stamps sent (ns, node clock)."""
    order = ("ir", "rgb") if first == "ir" else ("rgb", "ir")
    stamps = []
    start = time.monotonic()
    for i in range(round(hz * seconds)):
        delay = start + i / hz - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        now = node.get_clock().now().nanoseconds
        stamp = Time(sec=now // 10**9, nanosec=now % 10**9)
        for name in order:
            images[name].header.stamp = stamp
            publishers[name].publish(images[name])
        stamps.append(now)
    return stamps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rgb-topic", required=True)
    parser.add_argument("--ir-topic", required=True)
    parser.add_argument("--first", choices=("ir", "rgb"), nargs="+", required=True,
                        help="the stream published first in each pair; several: in turn")
    parser.add_argument("--rates", type=float, nargs="+", default=[5.0, 10.0, 30.0])
    parser.add_argument("--seconds", type=float, default=2.0, help="per rate")
    parser.add_argument("--pause", type=float, default=0.3, help="after each rate, s")
    parser.add_argument("--warmup", type=float, default=0.5, help="s, not reported")
    parser.add_argument("--rgb-size", type=size, default=(480, 640), help="WIDTHxHEIGHT")
    parser.add_argument("--ir-size", type=size, default=(120, 160), help="WIDTHxHEIGHT")
    args = parser.parse_args()
    rclpy.init()
    node = rclpy.create_node("test_camera_pair")
    publishers = {"rgb": node.create_publisher(Image, args.rgb_topic, QOS),
                  "ir": node.create_publisher(Image, args.ir_topic, QOS)}
    images = {"rgb": camera_image(*args.rgb_size, "rgb8", "rgb_optical_frame"),
              "ir": camera_image(*args.ir_size, "mono16", "ir_optical_frame")}
    deadline = time.monotonic() + MATCH_TIMEOUT_S
    while not all(p.get_subscription_count() for p in publishers.values()):
        if time.monotonic() > deadline:
            raise SystemExit("camera_process: no subscriber on both topics")
        time.sleep(0.02)
    stream(node, publishers, images, args.first[0], 10.0, args.warmup)
    for first in args.first:
        for hz in args.rates:
            stamps = stream(node, publishers, images, first, hz, args.seconds)
            print(json.dumps({"first": first, "hz": hz, "stamps": stamps}), flush=True)
            time.sleep(args.pause)
    print("done", flush=True)
    node.destroy_node()
    rclpy.shutdown()


if __name__ == "__main__":
    main()
