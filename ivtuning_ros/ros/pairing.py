"""RGB-IR pairing by approximate time, latest pair wins (no ROS imports).

Camera callbacks only store frames here; the inference worker takes the newest
settled pair when it is free. Nothing queues: a pair replaced before the worker
took it, or too old when the worker takes it, is dropped and counted, so the age
of published results stays bounded however slow the model is.

Rules, with stamps in nanoseconds. An RGB frame is *settled* as
* fused, with the IR frame closest in stamp within ``slop``, as soon as one has
  arrived (before or after the RGB frame, whatever the callback order);
* RGB-only, with a reason, when no partner can come:
  ``ir_silent`` - no IR received for ``ir_timeout`` (or since the pairer was
  made: the first RGB frames wait for IR like any other);
  ``no_ir_within_slop`` - an IR frame stamped after ``stamp + slop`` arrived
  (IR went past it: a lost IR frame, or a slower thermal camera), or the frame
  waited ``max_wait`` of receipt time;
  ``ir_clock_offset`` - as the previous, while recent IR stamps systematically
  lie farther than ``slop`` from every RGB stamp (see `stamp_offset_ns`); such
  frames do not wait at all.
Several RGB frames may wait at once, each with its own deadline, so a frame that
waits adds no latency to the frames behind it. A settled pair older than the
newest pair already offered is superseded (latest pair wins). No state is
sticky: every RGB frame is judged on the IR frames around it.

IR frames are kept sorted by stamp (a reordered IR frame is inserted, not
refused); an RGB stamp going backwards is refused (``stamps_backwards``); a jump
back of more than ``TIME_RESET_NS`` on either stream (a bag loop, a simulator
restart) resets the pairer.
"""
from __future__ import annotations

import bisect
import statistics
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TIME_RESET_NS = 1_000_000_000
MAX_IR_WAIT_NS = 100_000_000
IR_HISTORY = 16
MAX_WAITING_RGB = 8
# Frames behind the stamp-offset estimate (per stream); ~1-2 s of a thermal camera.
OFFSET_SAMPLES = 16
OFFSET_MIN_IR = 4  # IR frames needed before a clock offset is declared
RGB_ONLY_REASONS = ("ir_silent", "no_ir_within_slop", "ir_clock_offset")


@dataclass
class Frame:
    stamp_ns: int
    data: Any
    received_ns: int


@dataclass
class Pair:
    """An RGB frame with its IR partner, or alone with the reason (one of RGB_ONLY_REASONS)."""

    rgb: Frame
    ir: Frame | None
    alone_because: str | None = None

    @property
    def stamp_ns(self) -> int:
        return self.rgb.stamp_ns


class FramePairer:
    """Thread-safe pairing state; see the module docstring.

    ``counters`` counts dropped pairs (``dropped_replaced``: a newer pair took its
    place; ``dropped_stale``: too old when the worker was free), refused input
    (``stamps_backwards``), ``time_reset`` and ``ir_reordered``.
    """

    def __init__(self, slop_ns: int, ir_timeout_ns: int, stale_ns: int,
                 max_wait_ns: int = MAX_IR_WAIT_NS,
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.slop_ns = slop_ns
        self.ir_timeout_ns = ir_timeout_ns
        self.stale_ns = stale_ns
        self.max_wait_ns = max_wait_ns
        self._clock = clock  # the clock of Frame.received_ns
        self.counters: Counter[str] = Counter()
        self._lock = threading.Condition()
        self._ir: list[Frame] = []  # sorted by stamp, at most IR_HISTORY
        self._waiting: deque[Frame] = deque()  # RGB frames without a partner yet, by stamp
        self._pending: Pair | None = None
        self._newest_offered_ns: int | None = None
        self._last_rgb_ns: int | None = None
        self._last_ir_received_ns: int | None = None
        self._created_ns = clock()  # IR counts as silent only ir_timeout after this
        self._rgb_recent: deque[Frame] = deque(maxlen=4 * OFFSET_SAMPLES)
        self._ir_lags: deque[int] = deque(maxlen=OFFSET_SAMPLES)
        self._rgb_lags: deque[int] = deque(maxlen=OFFSET_SAMPLES)
        self._closed = False

    # Input ------------------------------------------------------------------------------
    def add_rgb(self, frame: Frame) -> bool:
        """Store an RGB frame; False if refused (stamp went backwards)."""
        with self._lock:
            last = self._last_rgb_ns
            if last is not None and frame.stamp_ns <= last:
                if last - frame.stamp_ns <= TIME_RESET_NS:
                    self.counters["stamps_backwards"] += 1
                    return False
                self._reset()
            self._last_rgb_ns = frame.stamp_ns
            self._rgb_recent.append(frame)
            self._rgb_lags.append(frame.received_ns - frame.stamp_ns)
            partner = self._closest_ir(frame.stamp_ns)
            if partner is not None:
                self._offer(Pair(frame, partner))
            elif self._ir_silent(frame.received_ns):
                self._offer(Pair(frame, None, "ir_silent"))
            elif self._ir_past(frame.stamp_ns) or self._offset_apart():
                self._offer(Pair(frame, None, self._no_partner_reason()))
            else:
                if len(self._waiting) == MAX_WAITING_RGB:
                    self._waiting.popleft()
                    self.counters["dropped_replaced"] += 1
                self._waiting.append(frame)
                self._lock.notify_all()
            return True

    def add_ir(self, frame: Frame) -> bool:
        """Store an IR frame (inserted by stamp); settle the RGB frames waiting for it."""
        with self._lock:
            if self._ir and self._ir[-1].stamp_ns - frame.stamp_ns > TIME_RESET_NS:
                self._reset()
            if self._ir and frame.stamp_ns < self._ir[-1].stamp_ns:
                self.counters["ir_reordered"] += 1
            bisect.insort(self._ir, frame, key=lambda f: f.stamp_ns)
            del self._ir[:-IR_HISTORY]
            self._last_ir_received_ns = frame.received_ns
            self._ir_lags.append(frame.received_ns - frame.stamp_ns)
            settled = None  # the newest waiting frame this IR frame settles
            while self._waiting:
                rgb = self._waiting[0]
                if abs(frame.stamp_ns - rgb.stamp_ns) <= self.slop_ns:
                    pair = Pair(rgb, frame)
                elif frame.stamp_ns > rgb.stamp_ns + self.slop_ns:
                    pair = Pair(rgb, None, self._no_partner_reason())
                else:
                    break  # this IR frame is older than the remaining waiting frames
                self._waiting.popleft()
                if settled is not None:
                    self.counters["dropped_replaced"] += 1
                settled = pair
            if settled is not None:
                self._offer(settled)
            return True

    # Worker -----------------------------------------------------------------------------
    def take(self, timeout: float | None = None) -> Pair | None:
        """The newest settled pair, waiting up to ``timeout`` s for one; stale pairs are
        dropped. RGB frames that waited ``max_wait_ns`` for a partner come out alone."""
        deadline = None if timeout is None else self._clock() + int(timeout * 1e9)
        with self._lock:
            while True:
                now = self._clock()
                self._expire_waiting(now)
                if self._pending is not None or self._closed:
                    break
                if deadline is not None and now >= deadline:
                    break
                waits = [] if deadline is None else [deadline - now]
                if self._waiting:
                    waits.append(self._waiting[0].received_ns + self.max_wait_ns - now)
                self._lock.wait(max(min(waits), 0) / 1e9 if waits else None)
            pair, self._pending = self._pending, None
            if pair is not None and self._clock() - pair.rgb.received_ns > self.stale_ns:
                self.counters["dropped_stale"] += 1
                return None
            return pair

    def close(self) -> None:
        """Wake a waiting `take` for shutdown."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()

    # State for diagnostics -------------------------------------------------------------
    def ir_alive(self) -> bool:
        """An IR frame arrived within ``ir_timeout``."""
        with self._lock:
            return self._last_ir_received_ns is not None and not self._ir_silent(self._clock())

    def stamp_offset_ns(self) -> int | None:
        """Estimated IR stamp minus RGB stamp for frames that arrive together (clock offset
        plus the difference of the cameras' delivery latencies); None before enough frames."""
        with self._lock:
            return self._stamp_offset()

    # Internals (called with the lock held) ---------------------------------------------
    def _offer(self, pair: Pair) -> None:
        """Make ``pair`` the worker's next pair unless a newer one was offered already."""
        if self._newest_offered_ns is not None and pair.stamp_ns < self._newest_offered_ns:
            self.counters["dropped_replaced"] += 1
            return
        if self._pending is not None:
            self.counters["dropped_replaced"] += 1
        while self._waiting and self._waiting[0].stamp_ns < pair.stamp_ns:
            self._waiting.popleft()  # older than what the worker gets next: superseded
            self.counters["dropped_replaced"] += 1
        self._pending = pair
        self._newest_offered_ns = pair.stamp_ns
        self._lock.notify_all()

    def _expire_waiting(self, now_ns: int) -> None:
        expired = None
        while self._waiting and now_ns - self._waiting[0].received_ns >= self.max_wait_ns:
            if expired is not None:
                self.counters["dropped_replaced"] += 1
            expired = self._waiting.popleft()
        if expired is not None:
            reason = "ir_silent" if self._ir_silent(now_ns) else self._no_partner_reason()
            self._offer(Pair(expired, None, reason))

    def _reset(self) -> None:
        self.counters["time_reset"] += 1
        self._ir.clear()
        self._waiting.clear()
        self._rgb_recent.clear()
        self._ir_lags.clear()
        self._rgb_lags.clear()
        self._pending = None
        self._newest_offered_ns = self._last_rgb_ns = None

    def _closest_ir(self, stamp_ns: int) -> Frame | None:
        best = min(self._ir, key=lambda f: abs(f.stamp_ns - stamp_ns), default=None)
        if best is None or abs(best.stamp_ns - stamp_ns) > self.slop_ns:
            return None
        return best

    def _ir_silent(self, now_ns: int) -> bool:
        last = self._last_ir_received_ns
        return now_ns - (self._created_ns if last is None else last) > self.ir_timeout_ns

    def _ir_past(self, stamp_ns: int) -> bool:
        """IR already went past this RGB stamp without a partner: none will come."""
        return bool(self._ir) and self._ir[-1].stamp_ns > stamp_ns + self.slop_ns

    def _offset_apart(self) -> bool:
        """Recent IR stamps lie systematically farther than ``slop`` from every RGB stamp: a
        clock offset, not a lost frame. Judged on IR frames received at least ``max_wait``
        ago (their RGB partners, if any, have arrived by then), by the median gap."""
        rgb_stamps = [f.stamp_ns for f in self._rgb_recent]
        if not rgb_stamps:
            return False
        now = self._clock()
        gaps = [_nearest_gap(rgb_stamps, ir.stamp_ns) for ir in self._ir
                if now - ir.received_ns >= self.max_wait_ns]
        return len(gaps) >= OFFSET_MIN_IR and statistics.median(gaps) > self.slop_ns

    def _no_partner_reason(self) -> str:
        return "ir_clock_offset" if self._offset_apart() else "no_ir_within_slop"

    def _stamp_offset(self) -> int | None:
        if len(self._ir_lags) < 2 or len(self._rgb_lags) < 2:
            return None
        return int(statistics.median(self._rgb_lags) - statistics.median(self._ir_lags))


def _nearest_gap(sorted_stamps: list[int], stamp_ns: int) -> int:
    """Distance from ``stamp_ns`` to the nearest of ``sorted_stamps`` (non-empty)."""
    i = bisect.bisect_left(sorted_stamps, stamp_ns)
    return min(abs(sorted_stamps[j] - stamp_ns) for j in (i - 1, i) if 0 <= j < len(sorted_stamps))
