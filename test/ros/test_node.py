"""The perception node over real DDS: outputs, IR dropout and recovery, bad input, runtime
parameters, lifecycle, compressed input and camera_info registration."""
import time

import cv2
import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402
from sensor_msgs.msg import CameraInfo, CompressedImage  # noqa: E402

from .harness import (  # noqa: E402
    IR_SIZE,
    NAME,
    RGB_SIZE,
    Harness,
    label_info_subscriber,
    rgb_image,
)


@pytest.fixture
def harness(ros_context):
    h = Harness(ros_context)
    yield h
    h.close()


def test_pairs_in_standard_messages_out(harness):
    harness.send_and_wait("ir/registered")  # a fused pair went through
    stamp, detections = harness.send_and_wait("detections")
    harness.wait_for(lambda: any(m.header.stamp == stamp
                                 for m in harness.received["segmentation/mask"]), "mask")
    mask = next(m for m in harness.received["segmentation/mask"] if m.header.stamp == stamp)
    assert detections.header.stamp == stamp
    assert detections.header.frame_id == "rgb_optical_frame"
    assert 0 < len(detections.detections) <= 100
    for detection in detections.detections:
        assert detection.header.stamp == stamp
        box = detection.bbox
        assert box.center.position.x - box.size_x / 2 >= -1e-3
        assert box.center.position.x + box.size_x / 2 <= RGB_SIZE[1] + 1e-3
        assert box.center.position.y - box.size_y / 2 >= -1e-3
        assert box.center.position.y + box.size_y / 2 <= RGB_SIZE[0] + 1e-3
        assert int(detection.results[0].hypothesis.class_id) in range(6)
        assert 0.0 <= detection.results[0].hypothesis.score <= 1.0
    assert (mask.height, mask.width, mask.encoding) == (*RGB_SIZE, "mono8")
    assert mask.header.frame_id == "rgb_optical_frame"
    assert max(np.frombuffer(mask.data, np.uint8)) < 9
    for topic, encoding, size in (("segmentation/color", "rgb8", RGB_SIZE),
                                  ("debug_image", "rgb8", RGB_SIZE),
                                  ("ir/registered", "mono8", RGB_SIZE)):
        harness.wait_for(lambda t=topic: harness.count(t) > 0, topic)
        image = harness.last(topic)
        assert (image.height, image.width, image.encoding) == (*size, encoding), topic
        assert image.header.frame_id == "rgb_optical_frame", topic


def test_label_info_reaches_a_late_subscriber(harness):
    harness.send_and_wait("detections")
    label_info_subscriber(harness, "label_info")
    label_info_subscriber(harness, "segmentation/label_info")
    harness.wait_for(lambda: harness.count("label_info") and harness.count(
        "segmentation/label_info"), "latched label info")
    names = [c.class_name for c in harness.last("label_info").class_map]
    assert names == ["People", "Car", "Bus", "Motorcycle", "Lamp", "Truck"]
    assert [c.class_id for c in harness.last("segmentation/label_info").class_map] == list(
        range(9))


def test_diagnostics_report_rates_latency_and_state(harness):
    for seed in range(5):
        harness.send_and_wait("detections", seed=seed)
    level, message, values = harness.diagnostics()
    assert level == DiagnosticStatus.OK, message
    assert values["state"] == "active" and values["ir_state"] == "fused"
    assert float(values["rgb_rate_hz"]) > 0 and float(values["output_rate_hz"]) > 0
    assert float(values["latency_p99_ms"]) >= float(values["latency_p50_ms"]) > 0
    assert float(values["node_overhead_p50_ms"]) > 0


def test_ir_dropout_runs_rgb_only_and_recovers(harness):
    harness.send_and_wait("detections")
    time.sleep(0.6)  # longer than ir_timeout: IR is silent now
    for seed in range(3):
        harness.send_and_wait("detections", seed=seed, ir=False)
    level, message, values = harness.diagnostics(ir=False)
    assert level == DiagnosticStatus.WARN and "IR silent" in message
    assert values["ir_state"].startswith("rgb_only")
    for seed in range(3):
        harness.send_and_wait("detections", seed=seed)
    level, message, values = harness.diagnostics()
    assert values["ir_state"] == "fused"
    assert level == DiagnosticStatus.OK, message


def corrupt(kind: str, stamp):
    msg = rgb_image(stamp)
    if kind == "unknown_encoding":
        msg.encoding = "yuv422_yuy2"
    elif kind == "wrong_step":
        msg.step = msg.width  # less than width * 3
    elif kind == "truncated":
        msg.data = msg.data[: len(msg.data) // 2]
    elif kind == "zero_size":
        msg.height = msg.width = msg.step = 0
        msg.data = []
    return msg


@pytest.mark.parametrize("kind", ["unknown_encoding", "wrong_step", "truncated", "zero_size"])
def test_bad_images_are_counted_and_the_node_keeps_answering(harness, kind):
    harness.send_and_wait("detections")
    for _ in range(3):
        harness.rgb_pub.publish(corrupt(kind, harness.now()))
        time.sleep(0.05)
    harness.wait_for(lambda: harness.node.stats.errors[f"rgb_{kind}"] >= 1, kind)
    _, _, values = harness.diagnostics()
    assert int(values[f"bad_input_rgb_{kind}"]) >= 1
    stamp, detections = harness.send_and_wait("detections", seed=7)
    assert detections.header.stamp == stamp


def test_stamps_going_backwards_are_refused(harness):
    stamp = harness.send_and_wait("detections")[0]
    earlier = type(stamp)(sec=stamp.sec, nanosec=stamp.nanosec)
    earlier.nanosec = max(0, earlier.nanosec - 200_000_000)
    if earlier.nanosec == stamp.nanosec:
        earlier.sec -= 1
    harness.rgb_pub.publish(rgb_image(earlier))
    harness.wait_for(lambda: harness.node.stats.errors["rgb_stamps_backwards"] >= 1,
                     "backwards stamp")
    harness.send_and_wait("detections", seed=3)


def test_threshold_and_class_filter_change_through_the_parameter_service(harness):
    client = AsyncParameterClient(harness.client, NAME)
    assert client.wait_for_services(timeout_sec=5.0)

    def set_parameter(name, value):
        future = client.set_parameters([Parameter(name, value=value)])
        harness.wait_for(future.done, f"set {name}")
        return future.result().results[0]

    # Untrained weights: filter by a class the unfiltered top-k of this frame holds, so the
    # filtered answer to the same fused frame cannot be empty by chance.
    _, detections = harness.send_and_wait_fused(seed=5)
    present = sorted({d.results[0].hypothesis.class_id for d in detections.detections})
    assert present, "an unfiltered frame at threshold 0 reports its top-k"
    name = harness.node.engine.class_names[int(present[0])]
    assert set_parameter("class_filter", name).successful
    _, detections = harness.send_and_wait_fused(seed=5)
    assert {d.results[0].hypothesis.class_id for d in detections.detections} == {present[0]}
    assert set_parameter("score_threshold", 1.0).successful
    _, detections = harness.send_and_wait("detections", seed=2)
    assert detections.detections == []
    assert not set_parameter("score_threshold", 2.0).successful
    assert not set_parameter("class_filter", "Unicorn").successful
    assert not set_parameter("device", "cuda").successful  # read-only: needs a restart


def test_deactivate_stops_outputs_and_activate_resumes(harness):
    harness.send_and_wait("detections")
    harness.node.trigger_deactivate()
    assert harness.node.engine is None
    before = harness.count("detections")
    for _ in range(5):
        harness.send_pair()
        time.sleep(0.05)
    time.sleep(0.3)
    assert harness.count("detections") == before
    harness.node.trigger_activate()
    harness.wait_for(lambda: harness.rgb_pub.get_subscription_count() > 0, "resubscribe")
    harness.send_and_wait("detections")


def test_compressed_images(ros_context):
    harness = Harness(ros_context, use_compressed=True)
    try:
        rgb = np.random.default_rng(0).integers(0, 256, (*RGB_SIZE, 3), dtype=np.uint8)
        ir = np.random.default_rng(1).integers(0, 65535, IR_SIZE, dtype=np.uint16)
        deadline = time.monotonic() + 10
        while not harness.count("detections") and time.monotonic() < deadline:
            stamp = harness.now()
            for publisher, data, fmt in ((harness.rgb_pub, cv2.imencode(".jpg", rgb)[1], "jpeg"),
                                         (harness.ir_pub, cv2.imencode(".png", ir)[1], "png")):
                msg = CompressedImage(format=fmt, data=data.tobytes())
                msg.header.stamp, msg.header.frame_id = stamp, "cam"
                publisher.publish(msg)
            time.sleep(0.2)
        assert harness.count("detections")
        assert harness.last("segmentation/mask").width == RGB_SIZE[1]
    finally:
        harness.close()


def test_camera_info_registration(ros_context):
    harness = Harness(ros_context, registration="camera_info",
                      ir_to_rgb_translation=[0.05, 0.0, 0.0], working_distance=5.0)
    try:
        for stream, (height, width), focal in (("rgb", RGB_SIZE, 900.0), ("ir", IR_SIZE, 500.0)):
            info = CameraInfo(height=height, width=width)
            info.k = [focal, 0.0, width / 2, 0.0, focal, height / 2, 0.0, 0.0, 1.0]
            harness.wait_for(lambda p=harness.info_pubs[stream]: p.get_subscription_count(),
                             "camera_info subscription")
            harness.info_pubs[stream].publish(info)
        harness.wait_for(lambda: harness.node._homography is not None, "registration")
        homography = harness.node._homography
        # IR principal point maps 0.05 m * 900 px / 5 m = 9 px right of the RGB centre.
        centre = homography @ np.array([IR_SIZE[1] / 2, IR_SIZE[0] / 2, 1.0])
        np.testing.assert_allclose(centre[:2] / centre[2], [RGB_SIZE[1] / 2 + 9, RGB_SIZE[0] / 2],
                                   atol=1e-6)
        harness.send_and_wait("detections")
    finally:
        harness.close()
