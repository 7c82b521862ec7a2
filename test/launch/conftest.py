"""Launch tests run on a plain `colcon build` of this source tree, in a sourced workspace
(see workspace.py); without ROS 2 launch tools they skip with that reason."""
from __future__ import annotations

import os
import shutil

import pytest

from .workspace import KIT_SETUP, build_workspace, ros_setup, sourced_environment

# A DDS domain of this run's own, on this machine only: concurrent runs must not meet.
os.environ["ROS_DOMAIN_ID"] = str(os.getpid() % 200 + 20)
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"


@pytest.fixture(scope="session")
def workspace(tmp_path_factory) -> dict:
    """{'root': the workspace, 'env': its sourced environment, 'share': the installed
    share/ivtuning_ros folder}."""
    setup = ros_setup()
    if setup is None:
        pytest.skip("no ROS 2 launch tools: neither a distribution under /opt/ros nor the kit "
                    f"at {KIT_SETUP}")
    path = sourced_environment(setup)["PATH"]
    if not (shutil.which("colcon", path=path) and shutil.which("ros2", path=path)):
        pytest.skip(f"{setup[0]} gives no colcon and ros2 commands (`make test` installs the "
                    "kit; on a distribution: apt install python3-colcon-common-extensions)")
    root = tmp_path_factory.mktemp("colcon_ws")
    env = build_workspace(root, setup)
    return {"root": root, "env": env,
            "share": root / "install" / "ivtuning_ros" / "share" / "ivtuning_ros"}

# Run by test_ros2_launch.py through `launch_test` in the sourced workspace; collected
# directly, it would run where the package is not installed.
collect_ignore = ["perception_launch_test.py"]
