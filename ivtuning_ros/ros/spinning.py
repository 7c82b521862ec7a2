"""Spin nodes in background threads, one single-threaded executor each.

rclpy's multi-threaded executor busy-waits on the GIL while callbacks run and starves
the perception node's inference thread, and one executor for several nodes lets a
blocked node slow the others: so each node gets an executor and a thread of its own.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from rclpy.executors import ExternalShutdownException, ShutdownException, SingleThreadedExecutor
from rclpy.node import Node


@contextmanager
def spinning(context, nodes: Sequence[Node], join_timeout: float = 30.0) -> Iterator[None]:
    """Spin ``nodes`` (each on its own executor and thread) while the block runs."""
    executors = []
    for node in nodes:
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        executors.append(executor)
    stop = threading.Event()
    threads = [threading.Thread(target=_spin_until, args=(e, stop), daemon=True)
               for e in executors]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        # The loops end before the executors shut down: rclpy's shutdown destroys the
        # executor's guard condition without waiting for a spin in another thread, which
        # then fails on it ("cannot use Destroyable because destruction was requested").
        stop.set()
        for thread in threads:
            thread.join(timeout=join_timeout)
        for executor in executors:
            executor.shutdown()


def _spin_until(executor: SingleThreadedExecutor, stop: threading.Event) -> None:
    """Execute callbacks until ``stop`` is set or the context shuts down."""
    while not stop.is_set() and executor.context.ok():
        try:
            executor.spin_once(timeout_sec=0.1)
        except (ExternalShutdownException, ShutdownException):
            return
