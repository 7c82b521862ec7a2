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
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

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


class Launched:
    """A command (`ros2 launch ...`, the cameras) in a session of its own, as a terminal
    runs it: SIGINT is Ctrl-C; its output (stdout + stderr) is collected line by line."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.started = time.monotonic()
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True,
                                        start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait(self, timeout: float) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def interrupt(self, timeout: float = 10.0) -> tuple[int, float]:
        """Ctrl-C; (exit code, seconds until it exited)."""
        start = time.monotonic()
        self.process.send_signal(signal.SIGINT)
        code = self.wait(timeout)
        return code, time.monotonic() - start

    def kill(self) -> None:
        """Last resort: the whole session (`ros2 launch` leaves children behind on SIGKILL)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.wait(10)


def ros2_launch(env: dict[str, str], **arguments: str) -> Launched:
    """`ros2 launch ivtuning_ros perception.launch.py name:=value ...`."""
    return Launched(["ros2", "launch", "ivtuning_ros", "perception.launch.py",
                     *(f"{k}:={v}" for k, v in arguments.items())], env)


def cameras(env: dict[str, str], rgb_topic: str, ir_topic: str, rate: float = 5.0) -> Launched:
    """RGB + IR cameras (cameras.py) in a process of their own."""
    return Launched([sys.executable, str(Path(__file__).with_name("cameras.py")),
                     "--rgb-topic", rgb_topic, "--ir-topic", ir_topic, "--rate", str(rate)], env)
