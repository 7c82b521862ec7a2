"""Large frames over real DDS: a maximum-size frame (4096², the default max_image_pixels) is
answered without stalling the pairs behind it, and neither it nor a refused over-limit frame
keeps its memory once normal frames flow again (issue 23).

The Fast DDS profile the node's entry point uses (`dds_memory`) is set at import, before any
participant of this test process exists; Fast DDS reads it once per process."""
import gc
import os
import time

import numpy as np
import pytest

from ivtuning_ros.ros.dds_memory import use_dynamic_history_memory

use_dynamic_history_memory()
rclpy = pytest.importorskip("rclpy")

from sensor_msgs.msg import Image  # noqa: E402

from ivtuning_ros.ros.conversions import fill_image  # noqa: E402

from .harness import Harness, ir_image  # noqa: E402

MIB = 2 ** 20
MAX_SIDE = 4096  # the default max_image_pixels is 4096²
# Normal pairs after a large frame: more than the test publisher's history (depth 10) and the
# node's (depth 5), so no DDS history still holds the large sample.
FLUSH_PAIRS = 15

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/self/statm"),
                                reason="reads Linux /proc")


def rss_bytes() -> int:
    """Resident set size of this process (node and client together, Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.fixture
def harness(ros_context):
    h = Harness(ros_context, outputs=("detections",))
    yield h
    h.close()


def settled_rss(harness: Harness) -> int:
    """RSS after FLUSH_PAIRS normal pairs have been answered."""
    for seed in range(FLUSH_PAIRS):
        harness.send_and_wait("detections", seed=seed)
    gc.collect()
    return rss_bytes()


def large_rgb(stamp, side: int) -> Image:
    msg = Image()
    msg.header.stamp, msg.header.frame_id = stamp, "rgb_optical_frame"
    frame = np.random.default_rng(7).integers(0, 256, (side, side, 3), dtype=np.uint8)
    fill_image(msg, frame, "rgb8")
    return msg


def answer_time_of_next_pairs(harness: Harness, timeout: float = 20.0) -> float:
    """Send normal pairs at 10 Hz, the first right away; seconds until one is answered."""
    start = time.monotonic()
    sent = set()
    while time.monotonic() - start < timeout:
        stamp = harness.send_pair(seed=1)
        sent.add((stamp.sec, stamp.nanosec))
        end = time.monotonic() + 0.1
        while time.monotonic() < end:
            with harness._lock:
                stamps = [m.header.stamp for m in harness.received["detections"]]
            if any((s.sec, s.nanosec) in sent for s in stamps):
                return time.monotonic() - start
            time.sleep(0.005)
    raise AssertionError(f"no normal pair answered within {timeout} s")


def test_a_maximum_size_frame_neither_stalls_the_next_pair_nor_keeps_its_memory(harness):
    before = settled_rss(harness)
    stamp = harness.now()
    big = large_rgb(stamp, MAX_SIDE)
    received = harness.node.stats.received["rgb"]
    harness.ir_pub.publish(ir_image(stamp))  # waiting when the large RGB frame arrives
    harness.rgb_pub.publish(big)
    del big
    harness.wait_for(lambda: harness.node.stats.received["rgb"] > received, "the large frame")
    next_pair_s = answer_time_of_next_pairs(harness)  # queued behind the large frame
    assert any(m.header.stamp == stamp for m in harness.received["detections"])
    growth = settled_rss(harness) - before
    print(f"next good pair answered in {next_pair_s:.2f} s; RSS {growth / MIB:+.1f} MiB")
    assert next_pair_s < 1.0
    assert growth < 50 * MIB, f"RSS kept {growth / MIB:+.1f} MiB after a 4096² frame"


def test_a_refused_over_limit_frame_does_not_keep_its_memory(harness):
    before = settled_rss(harness)
    stamp = harness.now()
    big = large_rgb(stamp, 2 * MAX_SIDE)
    harness.rgb_pub.publish(big)
    del big
    harness.wait_for(lambda: harness.node.stats.errors["rgb_too_large"] == 1, "refusal")
    growth = settled_rss(harness) - before
    print(f"RSS {growth / MIB:+.1f} MiB after a refused 8192² frame")
    assert growth < 50 * MIB, f"RSS kept {growth / MIB:+.1f} MiB after a refused 8192² frame"


@pytest.mark.parametrize("shape", [(1, 65535), (65535, 1)])
def test_a_degenerate_frame_is_refused_by_a_check_and_the_node_goes_on(harness, shape):
    harness.send_and_wait("detections")
    stamp = harness.now()
    message = Image()
    message.header.stamp, message.header.frame_id = stamp, "rgb_optical_frame"
    fill_image(message, np.zeros((*shape, 3), np.uint8), "rgb8")
    harness.ir_pub.publish(ir_image(stamp))
    harness.rgb_pub.publish(message)
    errors = harness.node.stats.errors
    harness.wait_for(lambda: errors["engine_input"] == 1, "the refusal")
    assert not any(kind.startswith("processing_") for kind in errors)
    harness.send_and_wait("detections", seed=2)

