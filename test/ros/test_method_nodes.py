"""The node on each adapter method (CPAL, DRA) from a config over real DDS: results with
the camera's header while fusing RGB + IR, and RGB-only results once the IR camera stops."""
import pytest
import yaml

rclpy = pytest.importorskip("rclpy")

from ..conftest import MODELS  # noqa: E402
from .harness import Harness  # noqa: E402


@pytest.mark.parametrize("method", ["cpal", "dra"])
def test_node_runs_the_method(ros_context, tmp_path, method):
    config = yaml.safe_load((MODELS / "ivt_tiny_test.yaml").read_text())
    config.update(name=f"{method}_tiny_test", method=method)
    path = tmp_path / f"{method}.yaml"
    path.write_text(yaml.safe_dump(config))
    harness = Harness(ros_context, model_config=str(path))
    try:
        stamp, detections = harness.send_and_wait("detections")
        assert detections.header.stamp == stamp
        assert detections.detections
        level, message, values = harness.diagnostics()
        assert values["model"] == f"{method}_tiny_test"
        assert values["ir_state"] == "fused" and float(values["fused_fraction"]) > 0, message
        stamp, mask = harness.send_and_wait("segmentation/mask", ir=False)
        assert mask.header.stamp == stamp
    finally:
        harness.close()
