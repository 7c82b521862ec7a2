"""Spin nodes in background threads, one single-threaded executor each.

rclpy's multi-threaded executor busy-waits on the GIL while callbacks run and starves
the perception node's inference thread, and one executor for several nodes lets a
blocked node slow the others: so each node gets an executor and a thread of its own.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node


@contextmanager
def spinning(context, nodes: Sequence[Node], join_timeout: float = 30.0) -> Iterator[None]:
    """Spin ``nodes`` (each on its own executor and thread) while the block runs."""
    executors = []
    for node in nodes:
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(node)
        executors.append(executor)
    threads = [threading.Thread(target=e.spin, daemon=True) for e in executors]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        for executor in executors:
            executor.shutdown()
        for thread in threads:
            thread.join(timeout=join_timeout)
