"""launch_testing test of the installed package: `perception.launch.py` from the ament index
with the demo weights, cameras in a process of their own; the node reaches active, every
output arrives, `ros2 lifecycle` and `ros2 param` work on it, and at shutdown every process
exits 0.

Run by test_ros2_launch.py in a sourced colcon workspace (``launch_test`` this file); its
name keeps pytest from collecting it where the package is not installed.
"""
import os
import subprocess
import sys
import time
import unittest
from pathlib import Path

import launch_testing
import launch_testing.asserts
import pytest
import rclpy
from ament_index_python.packages import get_package_share_directory
from diagnostic_msgs.msg import DiagnosticArray
from launch import LaunchDescription
from launch.actions import ExecuteProcess, IncludeLaunchDescription
from launch.events.process import ProcessExited
from launch.launch_description_sources import PythonLaunchDescriptionSource
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from vision_msgs.msg import Detection2DArray, LabelInfo

NODE = "/ivtuning_perception"
RGB, IR = "/test_rig/rgb/image_raw", "/test_rig/thermal/image_raw"
CAMERAS = Path(__file__).with_name("cameras.py")
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
OUTPUTS = {"detections": (Detection2DArray, 10), "segmentation/mask": (Image, 10),
           "label_info": (LabelInfo, LATCHED), "segmentation/label_info": (LabelInfo, LATCHED),
           "fusion_state": (DiagnosticArray, 10)}
TIMEOUT_S = 120.0
STARTED = time.monotonic()


@pytest.mark.launch_test
def generate_test_description():
    share = get_package_share_directory("ivtuning_ros")
    perception = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(share, "launch", "perception.launch.py")),
        launch_arguments={"checkpoint": os.path.join(share, "models", "ivt_demo.pth"),
                          "device": "cpu", "rgb_image": RGB, "ir_image": IR}.items())
    cameras = ExecuteProcess(cmd=[sys.executable, str(CAMERAS), "--rgb-topic", RGB,
                                  "--ir-topic", IR, "--rate", "5"], output="screen")
    return LaunchDescription([perception, cameras, launch_testing.actions.ReadyToTest()]), {}


def node_exited(proc_info) -> bool:
    return any(isinstance(proc_info[name], ProcessExited) for name in proc_info.process_names()
               if "perception_node" in name)


class TestRunningNode(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.context = rclpy.Context()
        rclpy.init(context=cls.context)
        cls.client = rclpy.create_node("launch_test_client", context=cls.context)
        cls.executor = SingleThreadedExecutor(context=cls.context)
        cls.executor.add_node(cls.client)
        cls.received = {topic: [] for topic in [*OUTPUTS, "/diagnostics"]}
        for topic, (kind, qos) in OUTPUTS.items():
            cls.client.create_subscription(kind, f"{NODE}/{topic}",
                                           cls._receiver(topic), qos)
        cls.client.create_subscription(DiagnosticArray, "/diagnostics",
                                       cls._receiver("/diagnostics"), 10)

    @classmethod
    def _receiver(cls, topic):
        def receive(msg):
            cls.received[topic].append((time.monotonic(), msg))
        return receive

    @classmethod
    def tearDownClass(cls):
        cls.executor.shutdown()
        cls.client.destroy_node()
        cls.context.try_shutdown()

    def spin_until(self, done, proc_info, what: str) -> None:
        deadline = time.monotonic() + TIMEOUT_S
        while not done():
            # Waiting on after the node died would end the launch under the test.
            self.assertFalse(node_exited(proc_info), f"the node exited before {what}")
            self.assertLess(time.monotonic(), deadline, f"no {what} within {TIMEOUT_S:g} s")
            self.executor.spin_once(timeout_sec=0.1)

    def test_1_every_output_arrives(self, proc_info):
        self.spin_until(lambda: all(self.received[t] for t in OUTPUTS), proc_info,
                        "message on every output topic")
        first = self.received["detections"][0][0] - STARTED
        print(f"first Detection2DArray {first:.2f} s after the launch description was made")
        labels = self.received["label_info"][0][1]
        self.assertIn("People", [c.class_name for c in labels.class_map])
        _, detections = self.received["detections"][-1]
        self.assertTrue(detections.header.frame_id)
        self.spin_until(lambda: self.pipeline_status() is not None, proc_info,
                        "pipeline status in /diagnostics")

    def pipeline_status(self):
        for _, message in reversed(self.received["/diagnostics"]):
            for status in message.status:
                if status.name.startswith("ivtuning_perception"):
                    return status
        return None

    def test_2_lifecycle_state_is_active(self):
        self.assertIn("active", ros2("lifecycle", "get", NODE))

    def test_3_param_set_get_describe(self):
        self.assertIn("successful", ros2("param", "set", NODE, "score_threshold", "0.5"))
        self.assertIn("0.5", ros2("param", "get", NODE, "score_threshold"))
        described = ros2("param", "describe", NODE, "score_threshold")
        self.assertIn("double", described)
        self.assertIn("lowest detection score", described)


def ros2(verb: str, *args: str, attempts: int = 5) -> str:
    """A ros2 verb's output; it must succeed. Without the daemon each call discovers the
    graph afresh, for at most --spin-time: a short one may miss the node, so retry."""
    for _ in range(attempts):
        done = subprocess.run(["ros2", verb, *args[:1], "--no-daemon", "--spin-time", "1",
                               *args[1:]], capture_output=True, text=True, timeout=60)
        if done.returncode == 0 or "Node not found" not in done.stdout + done.stderr:
            break
    assert done.returncode == 0, f"ros2 {verb} {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_every_process_exits_0(self, proc_info):
        launch_testing.asserts.assertExitCodes(proc_info)
