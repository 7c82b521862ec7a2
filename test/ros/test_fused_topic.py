"""~/fused/image over real DDS: nothing is fused while nobody subscribes; a subscriber gets
rgb8 images with the RGB frame's header and size."""
import pytest

rclpy = pytest.importorskip("rclpy")

from sensor_msgs.msg import Image  # noqa: E402

from .harness import OUTPUTS, RGB_SIZE, Harness  # noqa: E402


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
