"""Pipeline statistics for /diagnostics: rates, latency percentiles, drops, errors (no ROS)."""
from __future__ import annotations

import threading
from collections import Counter, deque

import numpy as np

WINDOW = 200  # samples kept for percentiles and rates


class PipelineStats:
    """Thread-safe counters and sliding windows filled by callbacks and the worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrivals: dict[str, deque[int]] = {k: deque(maxlen=WINDOW)
                                                 for k in ("rgb", "ir", "output")}
        self._samples: dict[str, deque[float]] = {k: deque(maxlen=WINDOW)
                                                  for k in ("latency", "age", "overhead")}
        self.errors: Counter[str] = Counter()

    def arrived(self, stream: str, now_ns: int) -> None:
        with self._lock:
            self._arrivals[stream].append(now_ns)

    def sample(self, name: str, value_ms: float) -> None:
        with self._lock:
            self._samples[name].append(value_ms)

    def error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    def rate(self, stream: str, now_ns: int, horizon_ns: int = 5_000_000_000) -> float:
        """Messages per second over the last ``horizon_ns``."""
        with self._lock:
            recent = [t for t in self._arrivals[stream] if now_ns - t <= horizon_ns]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max((recent[-1] - recent[0]) / 1e9, 1e-9)

    def percentiles(self, name: str) -> tuple[float, float]:
        """(p50, p99) in ms of a sample window; (0, 0) while empty."""
        with self._lock:
            values = list(self._samples[name])
        if not values:
            return 0.0, 0.0
        p50, p99 = np.percentile(values, [50, 99])
        return float(p50), float(p99)
