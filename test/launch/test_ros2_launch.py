"""`ros2 launch ivtuning_ros perception.launch.py` on a plain colcon build, as a user runs it:
the launch_testing suite passes, the first detection comes within a bound, Ctrl-C exits 0
within 2 s, and every fatal configuration error makes `ros2 launch` itself exit non-zero
with the node's one line."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import torch

from ..process import CollectedProcess
from .workspace import cameras, ros2_launch

rclpy = pytest.importorskip("rclpy")

from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from vision_msgs.msg import Detection2DArray  # noqa: E402

HERE = Path(__file__).resolve().parent
RGB, IR = "/rig/rgb/image_raw", "/rig/thermal/image_raw"
FIRST_DETECTION_BOUND_S = 60.0  # about 5 s on a 2-core CPU; a loaded CI host is slower


def test_launch_testing_suite_passes(workspace):
    run = subprocess.run(["launch_test", str(HERE / "perception_launch_test.py")],
                         env=workspace["env"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-6000:]


def test_show_args_describes_every_device_choice(workspace):
    shown = subprocess.run(["ros2", "launch", "ivtuning_ros", "perception.launch.py",
                            "--show-args"], env=workspace["env"], capture_output=True,
                           text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    device = shown.stdout.split("'device':", 1)[1].split("'backend':", 1)[0]
    for choice in ("auto", "cpu", "cuda", "cuda:N"):
        assert choice in device, device


def first_detection_s(launched: CollectedProcess, timeout: float) -> float:
    """Seconds from the launch's start to the first Detection2DArray received."""
    context = rclpy.Context()
    rclpy.init(context=context)
    client = rclpy.create_node("first_detection_client", context=context)
    received = []
    client.create_subscription(Detection2DArray, "/ivtuning_perception/detections",
                               lambda msg: received.append(time.monotonic()), 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(client)
    try:
        while not received:
            assert launched.process.poll() is None, launched.output
            assert time.monotonic() - launched.started < timeout, (
                f"no detections within {timeout:g} s:\n{launched.output}")
            executor.spin_once(timeout_sec=0.1)
    finally:
        executor.shutdown()
        client.destroy_node()
        context.try_shutdown()
    return received[0] - launched.started


def test_first_detection_then_ctrl_c_exits_0_within_2_s(workspace):
    env, share = workspace["env"], workspace["share"]
    rig = cameras(env, RGB, IR)
    launched = ros2_launch(env, checkpoint=str(share / "models" / "ivt_demo.pth"),
                           device="cpu", rgb_image=RGB, ir_image=IR)
    try:
        seconds = first_detection_s(launched, FIRST_DETECTION_BOUND_S)
        print(f"first Detection2DArray {seconds:.2f} s after `ros2 launch` started")
        code, stop_s = launched.stop()
    finally:
        launched.kill()
        rig.stop()
        rig.kill()
    assert code == 0, launched.output
    assert stop_s < 2.0, stop_s
    assert "Traceback" not in launched.output, launched.output
    for step in ("loaded checkpoint", "engine ready"):  # start-up progress, on the ROS logger
        assert any(step in line and "[ivtuning_perception]" in line
                   for line in launched.lines), launched.output


def fatal_configurations(share: Path, bad_yaml: Path) -> dict:
    """case: (launch arguments, words the node's one error line must hold)."""
    cases = {
        "malformed_parameters_file": ({"params_file": str(bad_yaml)}, ["not valid YAML"]),
        "device_gpu": ({"device": "gpu"}, ["device must be", "launch argument device"]),
        "backend_foo": ({"backend": "foo"}, ["backend must be one of", "launch argument"]),
        "checkpoint_not_the_model_config": (
            {"model_config": "ivt_tiny_test.yaml",
             "checkpoint": str(share / "models" / "ivt_demo.pth")}, ["ivt_demo"]),
        "not_a_checkpoint": ({"checkpoint": str(share / "package.xml")}, ["package.xml"]),
    }
    if not torch.cuda.is_available():
        cases["cuda_without_cuda"] = ({"device": "cuda"}, ["CUDA", "cpu"])
    return cases


@pytest.fixture(scope="module")
def fatal_runs(workspace, tmp_path_factory) -> dict:
    """Every fatal case under `ros2 launch` at once (each is mostly start-up time):
    {case: (exit code, output, words)}."""
    bad_yaml = tmp_path_factory.mktemp("params") / "broken.yaml"
    bad_yaml.write_text("/**:\n  ros__parameters: [unclosed\n")
    cases = fatal_configurations(workspace["share"], bad_yaml)
    runs = {case: ros2_launch(workspace["env"], **arguments)
            for case, (arguments, _) in cases.items()}
    results = {}
    for case, launched in runs.items():
        try:
            code = launched.wait(timeout=120)
        finally:
            launched.kill()
        results[case] = (code, launched.output, cases[case][1])
    return results


FATAL_CASES = ["malformed_parameters_file", "device_gpu", "backend_foo",
               "checkpoint_not_the_model_config", "not_a_checkpoint", "cuda_without_cuda"]


@pytest.mark.parametrize("case", FATAL_CASES)
def test_fatal_configuration_makes_ros2_launch_exit_non_zero(fatal_runs, case):
    if case not in fatal_runs:
        pytest.skip("CUDA is available here: device cuda is not an error")
    code, output, words = fatal_runs[case]
    assert code != 0, output
    assert "Traceback" not in output, output
    node_lines = [line for line in output.splitlines()
                  if line.startswith("[perception_node-1]") and
                  ("perception_node:" in line or "ERROR" in line)]
    assert len(node_lines) == 1, output
    assert all(word in node_lines[0] for word in words), node_lines[0]
    assert "exited with code" in output, output
