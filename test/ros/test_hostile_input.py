"""Hostile input over real DDS: absurd sizes (raw and compressed), non-finite thermal values,
implausible stamps, empty frame ids, lifecycle misuse. Each is refused or repaired by the
documented rule, counted in /diagnostics, and the node keeps answering."""
import time

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402

from ivtuning_ros.ros.conversions import fill_image  # noqa: E402

from .harness import NAME, Harness, ir_image, rgb_image  # noqa: E402

LIMIT = 1_500_000  # pixels: the 1280x720 test camera fits, 1600x1200 does not


@pytest.fixture
def harness(ros_context):
    h = Harness(ros_context, max_image_pixels=LIMIT,
                outputs=("detections", "fusion_state", "segmentation/mask"))
    yield h
    h.close()


def test_an_over_limit_frame_is_refused_counted_and_the_node_goes_on(harness):
    harness.send_and_wait("detections")
    big = Image()
    big.header.stamp = harness.now()
    fill_image(big, np.zeros((1200, 1600, 3), np.uint8), "rgb8")
    harness.rgb_pub.publish(big)
    harness.wait_for(lambda: harness.node.stats.errors["rgb_too_large"] == 1, "refusal")
    level, message, values = harness.diagnostics()
    assert int(values["bad_input_rgb_too_large"]) == 1
    stamp, detections = harness.send_and_wait("detections", seed=3)
    assert detections.header.stamp == stamp


def test_an_over_limit_compressed_frame_is_refused_before_decoding(ros_context):
    harness = Harness(ros_context, use_compressed=True, max_image_pixels=LIMIT,
                      outputs=("detections",))
    try:
        stamp = harness.now()
        png = cv2.imencode(".png", np.zeros((4000, 4000), np.uint8))[1]  # 16 Mpx, tiny file
        message = CompressedImage(format="png", data=png.tobytes())
        message.header.stamp = stamp
        harness.rgb_pub.publish(message)
        harness.wait_for(lambda: harness.node.stats.errors["rgb_too_large"] == 1, "refusal")
    finally:
        harness.close()


def test_non_finite_thermal_values_are_counted_and_still_fused(harness):
    harness.send_and_wait("detections")
    temperature = np.full((512, 640), 21.5, np.float32)
    temperature[100:200, 100:200] = 36.6
    temperature[:50, :50] = np.inf
    temperature[-50:, -50:] = -np.inf
    temperature[300, ::7] = np.nan
    before = len(harness.fusion_states())
    deadline = time.monotonic() + 10
    while len(harness.fusion_states()) == before and time.monotonic() < deadline:
        stamp = harness.now()
        harness.rgb_pub.publish(rgb_image(stamp))
        ir = Image()
        ir.header.stamp, ir.header.frame_id = stamp, "ir_optical_frame"
        fill_image(ir, temperature, "32FC1")
        harness.ir_pub.publish(ir)
        time.sleep(0.1)
    state = harness.fusion_states()[-1]
    assert state["ir_used"] == "true"
    assert harness.node.stats.errors["ir_non_finite"] >= 1
    detections = harness.last("detections")
    scores = [d.results[0].hypothesis.score for d in detections.detections]
    assert scores and np.isfinite(scores).all()


def test_zero_stamps_are_repaired_with_the_receipt_time(harness):
    harness.send_and_wait("detections")
    zero = Time()
    before = harness.count("detections")
    for _ in range(20):
        harness.rgb_pub.publish(rgb_image(zero))
        harness.ir_pub.publish(ir_image(zero))
        time.sleep(0.1)
        if harness.count("detections") > before:
            break
    message = harness.last("detections")
    now = harness.client.get_clock().now().nanoseconds
    stamp = message.header.stamp.sec * 10**9 + message.header.stamp.nanosec
    assert 0 < now - stamp < 5 * 10**9
    assert harness.node.stats.errors["rgb_stamp_zero"] >= 1
    assert harness.node.stats.errors["ir_stamp_zero"] >= 1


def test_stamps_far_from_the_clock_are_refused_and_ages_stay_honest(harness):
    for seed in range(3):
        harness.send_and_wait("detections", seed=seed)
    now = harness.now()
    old = Time(sec=now.sec - 3600, nanosec=now.nanosec)  # an hour ago: a replayed bag
    for _ in range(3):
        harness.rgb_pub.publish(rgb_image(old))
        harness.ir_pub.publish(ir_image(old))
        time.sleep(0.05)
    harness.wait_for(lambda: harness.node.stats.errors["rgb_stamp_implausible"] >= 1,
                     "refusal")
    assert not any(m.header.stamp == old for m in harness.received["detections"])
    level, message, values = harness.diagnostics()
    assert float(values["age_p99_ms"]) < 5000
    assert int(values["bad_input_rgb_stamp_implausible"]) >= 1


def test_an_empty_frame_id_gets_the_fallback(harness):
    harness.send_and_wait("detections")
    before = harness.count("detections")
    deadline = time.monotonic() + 10
    while harness.count("detections") == before and time.monotonic() < deadline:
        stamp = harness.now()
        harness.rgb_pub.publish(rgb_image(stamp, frame_id=""))
        harness.ir_pub.publish(ir_image(stamp))
        time.sleep(0.1)
    assert harness.last("detections").header.frame_id == "rgb_optical_frame"
    assert harness.last("segmentation/mask").header.frame_id == "rgb_optical_frame"
    assert harness.node.stats.errors["rgb_frame_id_empty"] >= 1


def test_healthy_cameras_report_ok_and_the_fused_fraction(harness):
    for seed in range(5):
        harness.send_and_wait("detections", seed=seed)
    level, message, values = harness.diagnostics()
    assert level == DiagnosticStatus.OK, message
    assert float(values["fused_fraction"]) == 1.0
    assert values["ir_state"] == "fused"


def test_class_filter_is_checked_while_inactive_and_a_failed_configure_is_an_error(harness):
    harness.node.trigger_deactivate()
    client = AsyncParameterClient(harness.client, NAME)
    assert client.wait_for_services(timeout_sec=5.0)
    future = client.set_parameters([Parameter("class_filter", value="Unicorn")])
    harness.wait_for(future.done, "set class_filter")
    result = future.result().results[0]
    assert not result.successful and "Unicorn" in result.reason
    harness.node.trigger_activate()
    harness.send_and_wait("detections")


def test_configure_failure_is_reported_as_error(ros_context):
    from ivtuning_ros.ros.node import PerceptionNode

    node = PerceptionNode(context=ros_context, parameter_overrides=[
        Parameter("model_config", value="does_not_exist.yaml"),
        Parameter("device", value="cpu"), Parameter("autostart", value=False)])
    try:
        node.trigger_configure()
        assert "configure failed" in node._state and "does_not_exist.yaml" in node._state
        level, message = node._level(node._fusion_summary(time.monotonic_ns()))
        assert level == DiagnosticStatus.ERROR and "does_not_exist.yaml" in message
    finally:
        node.destroy_node()
