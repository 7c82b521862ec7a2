"""The node on the real-time plain-ViT config (DINOv3 ViT-S/16 IV-tuning, both heads,
640x512) over real DDS: detections and masks with the camera's header, fused RGB + IR,
and a truthful /diagnostics report."""
import pytest

rclpy = pytest.importorskip("rclpy")

from .harness import RGB_SIZE, Harness  # noqa: E402


def test_node_runs_the_realtime_vit(ros_context):
    harness = Harness(ros_context, model_config="ivt_dinov3_s_realtime.yaml")
    try:
        stamp, detections = harness.send_and_wait("detections")
        assert detections.header.stamp == stamp
        assert detections.header.frame_id == "rgb_optical_frame"
        assert detections.detections  # score_threshold 0: every kept query is published
        stamp, mask = harness.send_and_wait("segmentation/mask")
        assert mask.header.stamp == stamp
        assert (mask.height, mask.width) == RGB_SIZE
        level, message, values = harness.diagnostics()
        assert values["state"] == "active", message
        assert values["model"] == "ivt_dinov3_s_realtime"
        assert values["ir_state"] == "fused" and float(values["fused_fraction"]) > 0
    finally:
        harness.close()
