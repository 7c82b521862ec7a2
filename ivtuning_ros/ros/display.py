"""A thread for display-only work (colour mask, debug overlay, registered IR, the fused
image), so that it never stalls inference: the newest job wins, older ones are dropped and
counted. In the background (Linux) the thread runs under SCHED_IDLE, inherited by the
worker threads its torch calls start: it gets a core only when inference leaves one idle,
so display work never slows inference where cores are scarce (``nice`` alone still took
10-15% of the median latency on a busy 2-core CPU)."""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any


class LatestJobThread:
    """Runs ``work(job)`` on its own thread for the newest submitted job.

    ``dropped`` counts jobs replaced before the thread took them. Errors from ``work``
    go to ``on_error`` and the thread goes on.
    """

    def __init__(self, name: str, work: Callable[[Any], None],
                 on_error: Callable[[Exception], None], background: bool = False) -> None:
        self._work = work
        self._background = background
        self._on_error = on_error
        self._condition = threading.Condition()
        self._job: Any = None
        self._running = True
        self.dropped = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, job: Any) -> None:
        with self._condition:
            if self._job is not None:
                self.dropped += 1
            self._job = job
            self._condition.notify()

    def stop(self, timeout: float = 5.0) -> None:
        with self._condition:
            self._running = False
            self._job = None
            self._condition.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        if self._background:
            _run_in_background()
        while True:
            with self._condition:
                while self._job is None and self._running:
                    self._condition.wait()
                if not self._running:
                    return
                job, self._job = self._job, None
            try:
                self._work(job)
            except Exception as exc:  # display must never take the node down
                self._on_error(exc)
            del job  # not held while waiting: a 4096x4096 frame is 48 MB


def _run_in_background() -> None:
    """The calling thread (Linux: scheduling is per thread) takes the CPU only when nothing
    else wants it; elsewhere the lowest ``nice``, or nothing where neither exists."""
    thread = threading.get_native_id()
    try:
        os.sched_setscheduler(thread, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.setpriority(os.PRIO_PROCESS, thread, 19)
        except (AttributeError, OSError):
            pass  # display work then shares the CPU equally with inference
