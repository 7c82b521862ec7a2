"""`perception_node` started as `ros2 run` would, with the package's parameters file."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

rclpy = pytest.importorskip("rclpy")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from vision_msgs.msg import Detection2DArray  # noqa: E402

from .harness import ir_image, rgb_image  # noqa: E402

PARAMS = Path(__file__).resolve().parents[2] / "config" / "perception.yaml"


def test_entry_point_reads_the_parameters_file(ros_context, tmp_path):
    params = yaml.safe_load(PARAMS.read_text())
    params["/**"]["ros__parameters"].update(model_config="ivt_tiny_test.yaml", device="cpu",
                                            score_threshold=0.0)
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(params))
    process = subprocess.Popen(
        [sys.executable, "-m", "ivtuning_ros.ros.node", "--ros-args",
         "--params-file", str(params_file), "-r", "__ns:=/robot",
         "-r", "~/rgb/image:=/robot/front/rgb", "-r", "~/ir/image:=/robot/front/thermal"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    client = rclpy.create_node("entry_point_client", context=ros_context)
    received = []
    client.create_subscription(Detection2DArray, "/robot/ivtuning_perception/detections",
                               received.append, 10)
    rgb_pub = client.create_publisher(Image, "/robot/front/rgb", 10)
    ir_pub = client.create_publisher(Image, "/robot/front/thermal", 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(client)
    try:
        deadline = time.monotonic() + 60
        while not received and time.monotonic() < deadline:
            assert process.poll() is None, process.stdout.read()
            stamp = client.get_clock().now().to_msg()
            rgb_pub.publish(rgb_image(stamp))
            ir_pub.publish(ir_image(stamp))
            executor.spin_once(timeout_sec=0.1)
        assert received, "no detections from the entry point within 60 s"
        assert received[0].header.frame_id == "rgb_optical_frame"
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
        executor.shutdown()
        client.destroy_node()
    assert process.returncode == 0, output
    assert "Traceback" not in output
    assert "engine ready: ivt_tiny_test on cpu" in output
