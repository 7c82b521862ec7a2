"""A command in a subprocess, started as a terminal starts it (a session of its own, so
SIGINT is a Ctrl-C for it alone), its output (stdout + stderr) collected line by line."""
from __future__ import annotations

import os
import signal
import subprocess
import threading
import time


class CollectedProcess:
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

    def wait_for_line(self, text: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.process.poll() is None, self.output
            assert time.monotonic() < deadline, f"no '{text}' within {timeout} s:\n{self.output}"
            time.sleep(0.01)

    def wait(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout)
        self._reader.join(5)
        return code

    def stop(self, signum: int = signal.SIGINT, timeout: float = 10) -> tuple[int, float]:
        """Send ``signum`` (default: Ctrl-C); (exit code, seconds until exit)."""
        start = time.monotonic()
        self.process.send_signal(signum)
        code = self.wait(timeout)
        return code, time.monotonic() - start

    def kill(self) -> None:
        """Last resort: the whole session (`ros2 launch` leaves children behind on SIGKILL)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.wait(10)
