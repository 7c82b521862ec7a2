"""The node on an exported back-end (OpenVINO) over real DDS: it exports the cameras' frame
layout on the first frame, then answers like the torch back-end, and says which back-end
and precision it runs in /diagnostics."""
import time

import pytest

rclpy = pytest.importorskip("rclpy")

from .harness import Harness  # noqa: E402


def test_node_runs_on_openvino(ros_context, tmp_path, capfd):
    harness = Harness(ros_context, backend="openvino", precision="fp32",
                      engine_cache_dir=str(tmp_path))
    try:
        # The first frame of the layout exports and compiles the model (seconds): keep the
        # cameras streaming until results come.
        deadline = time.monotonic() + 180
        while not harness.count("detections") and time.monotonic() < deadline:
            harness.send_pair()
            time.sleep(0.2)
        assert harness.count("detections"), "no detections within 180 s"
        assert list((tmp_path / "onnx").glob("*.onnx"))
        stamp, detections = harness.send_and_wait("detections")
        assert detections.header.stamp == stamp
        assert detections.detections
        harness.send_and_wait("segmentation/mask")
        level, message, values = harness.diagnostics()
        assert (values["backend"], values["precision"]) == ("openvino", "fp32")
        assert values["state"] == "active", message
        # Start-up progress is on the ROS logger, with the node's name: no "warm-up 0.0 s"
        # followed by a silent export.
        log = capfd.readouterr().err
        assert "[ivtuning_perception]: engine ready" in log and "no warm-up" in log, log
        assert "warm-up 0.0 s" not in log, log
        assert "[ivtuning_perception]: exporting ivt_tiny_test" in log, log
        assert "[ivtuning_perception]: exported " in log, log
    finally:
        harness.close()
