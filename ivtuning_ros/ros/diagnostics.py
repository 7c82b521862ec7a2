"""Pipeline statistics for /diagnostics: rates, latency percentiles, fusion state, errors
(no ROS). Windows are bounded in time as well as in count, so one bad sample or a burst
of them leaves the report within ``HORIZON_NS``."""
from __future__ import annotations

import threading
import time
from collections import Counter, deque

import numpy as np

WINDOW = 200  # samples kept for percentiles and the fused fraction
HORIZON_NS = 10_000_000_000  # and none older than this
RATE_WINDOW = 2000  # arrivals kept for rates: 400 Hz over RATE_HORIZON_NS
RATE_HORIZON_NS = 5_000_000_000
MIN_RATE_SPAN_NS = 1_000_000_000  # a new stream's first burst counts over at least this
REFUSAL_RECENT_NS = 2_000_000_000  # a stream refused this recently is still arriving


class PipelineStats:
    """Thread-safe counters and sliding windows filled by callbacks and the worker."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._arrivals: dict[str, deque[int]] = {k: deque(maxlen=RATE_WINDOW)
                                                 for k in ("rgb", "ir", "output")}
        self._first_arrival: dict[str, int] = {}
        self._accepted_at: dict[str, int] = {}
        self._refused: dict[str, tuple[int, str, str]] = {}  # stream: (time, kind, reason)
        self._samples: dict[str, deque[tuple[int, float]]] = {
            k: deque(maxlen=WINDOW) for k in ("latency", "age", "overhead")}
        self._outputs: deque[tuple[int, str | None]] = deque(maxlen=WINDOW)
        self.errors: Counter[str] = Counter()
        self.outputs: Counter[str] = Counter()  # "fused", or "rgb_only_<reason>", all time
        self.received: Counter[str] = Counter()  # frames per camera stream, all time

    def arrived(self, stream: str, now_ns: int) -> None:
        """A camera frame ("rgb" or "ir") reached its callback."""
        with self._lock:
            self._arrive(stream, now_ns)
            self.received[stream] += 1

    def _arrive(self, stream: str, now_ns: int) -> None:
        self._arrivals[stream].append(now_ns)
        self._first_arrival.setdefault(stream, now_ns)

    def accepted(self, stream: str, now_ns: int) -> None:
        """A camera frame passed the checks and went to the pairer."""
        with self._lock:
            self._accepted_at[stream] = now_ns

    def refused(self, stream: str, kind: str, reason: str, now_ns: int) -> None:
        """A camera frame was refused for ``kind``; ``reason`` names the cause and the fix."""
        with self._lock:
            self._refused[stream] = (now_ns, kind, reason)

    def refusal(self, stream: str, now_ns: int, quiet_ns: int) -> tuple[str, str] | None:
        """(kind, reason) of the last refused frame when ``stream`` frames were refused in the
        last ``REFUSAL_RECENT_NS`` and none was accepted in the last ``quiet_ns``."""
        with self._lock:
            refused, accepted_at = self._refused.get(stream), self._accepted_at.get(stream)
        if refused is None or now_ns - refused[0] > REFUSAL_RECENT_NS:
            return None
        if accepted_at is not None and now_ns - accepted_at <= quiet_ns:
            return None
        return refused[1], refused[2]

    def sample(self, name: str, value_ms: float, now_ns: int) -> None:
        with self._lock:
            self._samples[name].append((now_ns, value_ms))

    def error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] += 1

    def output(self, now_ns: int, rgb_only_reason: str | None) -> None:
        """One published result: fused (reason None) or RGB-only for ``rgb_only_reason``."""
        with self._lock:
            self._arrive("output", now_ns)
            self._outputs.append((now_ns, rgb_only_reason))
            self.outputs["fused" if rgb_only_reason is None
                         else f"rgb_only_{rgb_only_reason}"] += 1

    def rate(self, stream: str, now_ns: int, horizon_ns: int = RATE_HORIZON_NS) -> float:
        """Messages per second: those of the last ``horizon_ns`` over the horizon (over the
        time since the stream was first seen while that is shorter, at least
        ``MIN_RATE_SPAN_NS``). Arrival spacing is not used: messages queued while the
        callbacks stalled arrive in a burst, microseconds apart."""
        with self._lock:
            arrivals = self._arrivals[stream]
            count = sum(1 for t in arrivals if now_ns - t <= horizon_ns)
            start = self._first_arrival.get(stream, now_ns)
            if len(arrivals) == arrivals.maxlen:
                start = max(start, arrivals[0])  # older arrivals are forgotten
        span = max(min(horizon_ns, now_ns - start), MIN_RATE_SPAN_NS)
        return count / (span / 1e9)

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
