"""The package as a ROS 2 user gets it: a plain `colcon build` of the source tree into a
workspace of its own, the environment a shell has after sourcing ROS 2 and the workspace's
``install/setup.bash``, and `ros2 launch` run in it with cameras in a process of their own.

ROS 2's launch tools come from a distribution (``/opt/ros/<distro>/setup.bash``) or, on
machines with none, from the kit at ``../shared/ros2`` (installed into the venv by
``make test``); ``IVTUNING_ROS_SETUP`` names another setup file.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from ..process import CollectedProcess

REPO = Path(__file__).resolve().parents[2]
KIT_SETUP = REPO.parent / "shared" / "ros2" / "env.sh"
NOT_COPIED = (".venv", ".git", "build", "install", "log", "out", "__pycache__", "*.egg-info",
              ".pytest_cache", ".ruff_cache")


def ros_setup() -> tuple[Path, list[str]] | None:
    """(setup file, its arguments) standing in for a distribution's setup.bash, or None."""
    explicit = os.environ.get("IVTUNING_ROS_SETUP")
    if explicit:
        return Path(explicit), []
    distributions = sorted(Path("/opt/ros").glob("*/setup.bash"))
    if distributions:
        return distributions[-1], []
    if KIT_SETUP.is_file():
        return KIT_SETUP, [sys.prefix]
    return None


def sourced_environment(*scripts: tuple[Path, list[str]]) -> dict[str, str]:
    """The environment after ``source``-ing each script in turn in bash."""
    command = "; ".join(f"source {script} {' '.join(args)} >/dev/null" for script, args in scripts)
    output = subprocess.run(["bash", "-c", f"{command} && env -0"], check=True,
                            capture_output=True, env=os.environ).stdout.decode()
    return dict(line.split("=", 1) for line in output.split("\0") if "=" in line)




def build_workspace(root: Path, setup: tuple[Path, list[str]]) -> dict[str, str]:
    """Copy the source tree to ``root/src``, `colcon build` it (plainly, as ROS tutorials
    do) and return the environment with the workspace sourced."""
    base = sourced_environment(setup)
    shutil.copytree(REPO, root / "src" / "ivtuning_ros",
                    ignore=shutil.ignore_patterns(*NOT_COPIED))
    build = subprocess.run(["colcon", "build", "--event-handlers", "console_direct-"],
                           cwd=root, env=base, capture_output=True, text=True)
    if build.returncode:
        raise RuntimeError(f"colcon build failed:\n{build.stdout}{build.stderr}")
    env = sourced_environment(setup, (root / "install" / "setup.bash", []))
    env.update(PYTHONUNBUFFERED="1", RCUTILS_LOGGING_BUFFERED_STREAM="0",
               RCUTILS_COLORIZED_OUTPUT="0")
    return env


def ros2_launch(env: dict[str, str], **arguments: str) -> CollectedProcess:
    """`ros2 launch ivtuning_ros perception.launch.py name:=value ...`."""
    return CollectedProcess(["ros2", "launch", "ivtuning_ros", "perception.launch.py",
                     *(f"{k}:={v}" for k, v in arguments.items())], env)


def cameras(env: dict[str, str], rgb_topic: str, ir_topic: str,
            rate: float = 5.0) -> CollectedProcess:
    """RGB + IR cameras (cameras.py) in a process of their own."""
    return CollectedProcess([sys.executable, str(Path(__file__).with_name("cameras.py")),
                     "--rgb-topic", rgb_topic, "--ir-topic", ir_topic, "--rate", str(rate)], env)
