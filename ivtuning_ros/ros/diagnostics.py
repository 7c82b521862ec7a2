"""Pipeline statistics for /diagnostics: rates, latency percentiles, fusion state, errors
(no ROS). Windows are bounded in time as well as in count, so one bad sample or a burst
of them leaves the report within ``HORIZON_NS``."""
from __future__ import annotations

import threading
import time
from collections import Counter, deque

import numpy as np

WINDOW = 200  # samples kept for percentiles, rates and the fused fraction
HORIZON_NS = 10_000_000_000  # and none older than this


class PipelineStats:
    """Thread-safe counters and sliding windows filled by callbacks and the worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrivals: dict[str, deque[int]] = {k: deque(maxlen=WINDOW)
                                                 for k in ("rgb", "ir", "output")}
        self._samples: dict[str, deque[tuple[int, float]]] = {
            k: deque(maxlen=WINDOW) for k in ("latency", "age", "overhead")}
        self._outputs: deque[tuple[int, str | None]] = deque(maxlen=WINDOW)
        self.errors: Counter[str] = Counter()
        self.outputs: Counter[str] = Counter()  # "fused", or "rgb_only_<reason>", all time
        self.received: Counter[str] = Counter()  # frames per camera stream, all time

    def arrived(self, stream: str, now_ns: int) -> None:
        """A camera frame ("rgb" or "ir") reached its callback."""
        with self._lock:
            self._arrivals[stream].append(now_ns)
            self.received[stream] += 1

    def sample(self, name: str, value_ms: float, now_ns: int) -> None:
        with self._lock:
            self._samples[name].append((now_ns, value_ms))

    def error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    def output(self, now_ns: int, rgb_only_reason: str | None) -> None:
        """One published result: fused (reason None) or RGB-only for ``rgb_only_reason``."""
        with self._lock:
            self._arrivals["output"].append(now_ns)
            self._outputs.append((now_ns, rgb_only_reason))
            self.outputs["fused" if rgb_only_reason is None
                         else f"rgb_only_{rgb_only_reason}"] += 1

    def rate(self, stream: str, now_ns: int, horizon_ns: int = 5_000_000_000) -> float:
        """Messages per second over the last ``horizon_ns``."""
        with self._lock:
            recent = [t for t in self._arrivals[stream] if now_ns - t <= horizon_ns]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max((recent[-1] - recent[0]) / 1e9, 1e-9)

    def percentiles(self, name: str, now_ns: int | None = None) -> tuple[float, float]:
        """(p50, p99) in ms over the recent window (ending now, on the monotonic clock, or at
        ``now_ns``); (0, 0) while empty.

        Nearest rank below (``method="lower"``): p99 never reads the single largest sample
        of a window, so one absurd value cannot become the reported p99."""
        now_ns = time.monotonic_ns() if now_ns is None else now_ns
        with self._lock:
            values = [v for t, v in self._samples[name] if now_ns - t <= HORIZON_NS]
        if not values:
            return 0.0, 0.0
        p50, p99 = np.percentile(values, [50, 99], method="lower")
        return float(p50), float(p99)

    def fusion(self, now_ns: int) -> tuple[int, int, Counter[str]]:
        """(outputs, fused outputs, RGB-only reasons) over the recent window."""
        with self._lock:
            recent = [reason for t, reason in self._outputs if now_ns - t <= HORIZON_NS]
        reasons = Counter(r for r in recent if r is not None)
        return len(recent), len(recent) - sum(reasons.values()), reasons
