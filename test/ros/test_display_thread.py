"""The display thread: newest job wins, errors do not stop it, and in the background it
yields the CPU to inference (SCHED_IDLE on Linux, inherited by the threads it starts)."""
import os
import sys
import threading
import time

import pytest
import torch

from ivtuning_ros.ros.display import LatestJobThread


def test_the_newest_job_wins_and_errors_do_not_stop_the_thread():
    seen, gate = [], threading.Event()

    def work(job):
        if job == "slow":
            gate.wait(5)
        if job == "bad":
            raise ValueError("broken frame")
        seen.append(job)

    errors, done = [], threading.Event()
    thread = LatestJobThread("test-display", lambda j: (work(j), j == "last" and done.set()),
                             errors.append)
    try:
        thread.submit("slow")
        time.sleep(0.2)  # the thread has taken "slow" and waits on the gate
        for job in ("a", "b", "bad"):
            thread.submit(job)
        gate.set()
        time.sleep(0.2)
        thread.submit("last")
        assert done.wait(5)
    finally:
        thread.stop()
    assert seen == ["slow", "last"]  # "a" and "b" were replaced before the thread took them
    assert thread.dropped == 2
    assert [str(e) for e in errors] == ["broken frame"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="SCHED_IDLE is Linux's")
def test_background_work_runs_under_sched_idle_as_do_the_torch_threads_it_starts():
    policies, done = {}, threading.Event()

    def work(_):
        policies["thread"] = os.sched_getscheduler(threading.get_native_id())
        # torch's intra-op workers for this thread are created from it and inherit its policy
        torch.ones(512, 512) @ torch.ones(512, 512)
        policies["idle_threads"] = sum(
            policy(int(t)) == os.SCHED_IDLE for t in os.listdir(f"/proc/{os.getpid()}/task"))
        done.set()

    thread = LatestJobThread("test-display", work, lambda exc: None, background=True)
    try:
        thread.submit("job")
        assert done.wait(10)
    finally:
        thread.stop()
    assert policies["thread"] == os.SCHED_IDLE
    if torch.get_num_threads() > 1:
        assert policies["idle_threads"] >= 2  # the thread and at least one torch worker
    assert os.sched_getscheduler(threading.get_native_id()) == os.SCHED_OTHER  # caller untouched


def policy(thread_id: int) -> int | None:
    try:
        return os.sched_getscheduler(thread_id)
    except ProcessLookupError:  # the thread ended meanwhile
        return None
