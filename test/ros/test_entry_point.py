"""`perception_node` started as `ros2 run` would, with a parameters file: it runs, it fails
in one readable line on bad configuration, and it stops cleanly on a signal at any phase."""
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import yaml

rclpy = pytest.importorskip("rclpy")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from vision_msgs.msg import Detection2DArray  # noqa: E402

from ..process import CollectedProcess  # noqa: E402
from .harness import ir_image, rgb_image  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PARAMS = REPO / "config" / "perception.yaml"
TINY = {"model_config": "ivt_tiny_test.yaml", "device": "cpu", "allow_untrained": True,
        "score_threshold": 0.0}


class NodeProcess(CollectedProcess):
    """The entry point in a subprocess, with a parameters file of ``parameters``."""

    def __init__(self, tmp_path: Path, **parameters) -> None:
        params = yaml.safe_load(PARAMS.read_text())
        params["/**"]["ros__parameters"].update(parameters)
        params_file = tmp_path / "params.yaml"
        params_file.write_text(yaml.safe_dump(params))
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "RCUTILS_LOGGING_BUFFERED_STREAM": "0"}
        super().__init__(
            [sys.executable, "-m", "ivtuning_ros.ros.entry", "--ros-args",
             "--params-file", str(params_file), "-r", "__ns:=/robot",
             "-r", "~/rgb/image:=/robot/front/rgb", "-r", "~/ir/image:=/robot/front/thermal"],
            env)


def stream_until_detections(ros_context, process: NodeProcess, timeout: float = 60) -> list:
    client = rclpy.create_node("entry_point_client", context=ros_context)
    received = []
    client.create_subscription(Detection2DArray, "/robot/ivtuning_perception/detections",
                               received.append, 10)
    rgb_pub = client.create_publisher(Image, "/robot/front/rgb", 10)
    ir_pub = client.create_publisher(Image, "/robot/front/thermal", 10)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(client)
    try:
        deadline = time.monotonic() + timeout
        while not received and time.monotonic() < deadline:
            assert process.process.poll() is None, process.output
            stamp = client.get_clock().now().to_msg()
            rgb_pub.publish(rgb_image(stamp))
            ir_pub.publish(ir_image(stamp))
            executor.spin_once(timeout_sec=0.1)
    finally:
        executor.shutdown()
        client.destroy_node()
    return received


def assert_clean(output: str) -> None:
    assert "Traceback" not in output, output
    assert "processing a frame failed" not in output, output


def test_entry_point_reads_the_parameters_file(ros_context, tmp_path):
    # ir_timeout written as an integer, as people do: read as 1.0, not refused.
    process = NodeProcess(tmp_path, **TINY, ir_timeout=1)
    try:
        received = stream_until_detections(ros_context, process)
        assert received, "no detections from the entry point within 60 s"
        assert received[0].header.frame_id == "rgb_optical_frame"
    finally:
        code, seconds = process.stop(signal.SIGINT)
    assert code == 0, process.output
    assert seconds < 2.0
    assert_clean(process.output)
    assert "engine ready: ivt_tiny_test on cpu" in process.output


# Under `ros2 launch` (test/launch/test_ros2_launch.py): a malformed parameters file, a bad
# device name, CUDA missing, a checkpoint of another model. Here the exact exit codes.
BAD_CONFIGURATIONS = {
    # case: (parameters, exit code, words the one error line must hold)
    "out_of_range": ({**TINY, "score_threshold": 5.0}, 2, ["score_threshold",
                                                           "the parameters file"]),
    "wrong_type": ({**TINY, "slop": "fast"}, 2, ["slop", "number"]),
    "unknown_class": ({**TINY, "class_filter": "Unicorn"}, 1, ["Unicorn", "People"]),
    "missing_config": ({"model_config": "nope.yaml", "device": "cpu"}, 1, ["nope.yaml"]),
}


@pytest.mark.parametrize("case", sorted(BAD_CONFIGURATIONS))
def test_bad_configuration_fails_in_one_readable_line(tmp_path, case):
    parameters, expected_code, words = BAD_CONFIGURATIONS[case]
    process = NodeProcess(tmp_path, **parameters)
    code = process.wait()
    assert code == expected_code, process.output
    assert_clean(process.output)
    errors = [line for line in process.lines if "perception_node:" in line or "ERROR" in line]
    assert len(errors) == 1, process.output
    assert all(word in errors[0] for word in words), errors[0]


@pytest.mark.parametrize("phase", ["importing", "warming_up", "running"])
def test_a_signal_at_any_phase_exits_cleanly_within_2_s(ros_context, tmp_path, phase):
    # The real-time model: model building and warm-up take seconds on this CPU.
    process = NodeProcess(tmp_path, model_config="ivt_swin_t_realtime.yaml", device="cpu")
    signum = signal.SIGTERM
    try:
        if phase == "importing":
            time.sleep(0.3)
        elif phase == "warming_up":
            process.wait_for_line("no checkpoint given")  # model built; warm-up starts now
        else:
            process.wait_for_line("engine ready")
            assert stream_until_detections(ros_context, process, timeout=120)
            signum = signal.SIGINT
        code, seconds = process.stop(signum)
    finally:
        process.kill()  # a node left running would talk to the next tests' topics
    assert code == 0, process.output
    assert seconds < 2.0, seconds
    assert_clean(process.output)
