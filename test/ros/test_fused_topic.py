"""~/fused/image over real DDS: nothing is fused while nobody subscribes; a subscriber gets
rgb8 images with the RGB frame's header and size, and the visible image while IR is lost."""
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from sensor_msgs.msg import Image  # noqa: E402

from .harness import OUTPUTS, RGB_SIZE, Harness, rgb_image  # noqa: E402


def test_fused_image_only_with_a_subscriber(ros_context):
    outputs = [topic for topic in OUTPUTS if topic != "debug_image"]
    harness = Harness(ros_context, outputs=outputs, fusion_max_rate=0.0)
    try:
        for _ in range(3):
            harness.send_and_wait("detections")
        assert harness.node._fusion is not None
        assert harness.node._fused_at == 0.0, "fused although nobody subscribed"
        harness.subscribe("fused/image", Image)
        stamp, msg = harness.send_and_wait("fused/image")
        assert msg.header.stamp == stamp
        assert msg.header.frame_id == "rgb_optical_frame"
        assert msg.encoding == "rgb8" and (msg.height, msg.width) == RGB_SIZE
        assert harness.node._fused_at > 0.0
    finally:
        harness.close()


def test_without_ir_the_visible_image_keeps_the_view_live(ros_context):
    harness = Harness(ros_context, outputs=["detections", "fusion_state"], fusion_max_rate=0.0)
    try:
        harness.subscribe("fused/image", Image)
        harness.send_and_wait("fused/image")  # fused with IR
        time.sleep(0.6)  # longer than ir_timeout: the IR camera is lost
        stamp, msg = harness.send_and_wait("fused/image", seed=4, ir=False)
        harness.wait_for(lambda: any(s["stamp_ns"] == stamp.sec * 10**9 + stamp.nanosec
                                     for s in harness.fusion_states()), "fusion state")
        state = next(s for s in harness.fusion_states()
                     if s["stamp_ns"] == stamp.sec * 10**9 + stamp.nanosec)
        assert state["ir_used"] == "false", state
        assert msg.header.stamp == stamp
        sent = np.frombuffer(rgb_image(stamp, seed=4).data, np.uint8)
        assert np.array_equal(np.frombuffer(msg.data, np.uint8), sent)
    finally:
        harness.close()
