"""~/saliency over real DDS: a model with the SOD head publishes mono8 saliency at the RGB
frame's size with its header; the debug overlay still comes (with the saliency contour)."""
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from sensor_msgs.msg import Image  # noqa: E402

from .harness import RGB_SIZE, Harness  # noqa: E402


def test_saliency_arrives_with_the_rgb_header(ros_context):
    harness = Harness(ros_context, outputs=["detections", "segmentation/mask"],
                      model_config="ivt_tiny_sod_test.yaml")
    try:
        harness.subscribe("saliency", Image)
        harness.wait_for(lambda: harness.node.count_subscribers(
            "/ivtuning_perception/saliency") > 0, "saliency subscription")
        stamp, msg = harness.send_and_wait("saliency")
        assert msg.header.stamp == stamp
        assert msg.header.frame_id == "rgb_optical_frame"
        assert msg.encoding == "mono8" and (msg.height, msg.width) == RGB_SIZE
        assert msg.step == msg.width and len(msg.data) == msg.height * msg.width
        saliency = np.frombuffer(msg.data, np.uint8)
        # Untrained weights give mid-range probabilities: neither a blank nor a class map.
        assert 0 < saliency.min() and saliency.max() < 255
        mask_stamp, mask = harness.send_and_wait("segmentation/mask")
        assert mask.header.stamp == mask_stamp
    finally:
        harness.close()


def test_no_saliency_without_the_head(ros_context):
    harness = Harness(ros_context, outputs=["detections"])
    try:
        harness.subscribe("saliency", Image)
        for _ in range(2):
            harness.send_and_wait("detections")
        assert harness.count("saliency") == 0
    finally:
        harness.close()
