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
  ``no_ir_within_slop`` - the IR frame received last is stamped after
  ``stamp + slop`` (IR went past it: a lost IR frame, or a slower thermal
  camera), or the frame waited ``max_wait`` of receipt time;
  ``ir_clock_offset`` - while the IR clock is off (below); such frames do not
  wait, and an IR frame stamped within ``slop`` is not used unless
  ``fuse_despite_clock_offset``: it was captured about the offset apart.

The IR clock is off when the stamp offset (`stamp_offset_ns`: median RGB receipt
lag minus median IR receipt lag, lag = receipt time - stamp, over the last
``OFFSET_WINDOW_NS``) exceeds `offset_limit_ns`: ``CLOCK_OFFSET_PERIODS`` frame
periods of the slower camera, at least ``CLOCK_OFFSET_MIN_NS``. Cameras on one
clock differ only by their delivery latencies, well below that; whatever the
frame rates, drops or pairing, the test is the same. Among IR frames within
``slop`` of an RGB frame, one whose receipt lag agrees with the RGB frame's
(within the limit) is preferred, so a clock that was fixed pairs right at once;
one that disagrees is used only as a last resort (a stalled callback) and
never while the clock is off, unless asked for.

Several RGB frames may wait at once, each with its own deadline, so a frame that
waits adds no latency to the frames behind it. A settled pair older than the
newest pair already offered is superseded (latest pair wins). No state is
sticky: every RGB frame is judged on the IR frames around it and the last
``OFFSET_WINDOW_NS`` of receipt lags.

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
from itertools import pairwise
from typing import Any

TIME_RESET_NS = 1_000_000_000
MAX_IR_WAIT_NS = 100_000_000
IR_HISTORY = 16
MAX_WAITING_RGB = 8
# The stamp-offset estimate: each stream's receipt lags of the last OFFSET_WINDOW_NS, or
# its newest OFFSET_WINDOW_FRAMES where those are more; none before OFFSET_MIN_FRAMES.
OFFSET_WINDOW_NS = 500_000_000
OFFSET_WINDOW_FRAMES = 5
OFFSET_MIN_FRAMES = 3
RECENT_FRAMES = 64  # per stream: 0.5 s at 120 Hz
PERIOD_FRAMES = 16  # the frame period is the median stamp step of these
CLOCK_OFFSET_PERIODS = 3  # a stamp offset beyond this many frame periods is a clock offset,
CLOCK_OFFSET_MIN_NS = 200_000_000  # and beyond this (delivery latencies differ this much)
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
    """Thread-safe pairing state; see the module docstring. ``fuse_despite_clock_offset``:
    while the IR clock is off, still fuse with an IR frame stamped within ``slop``.

    ``counters`` counts dropped pairs (``dropped_replaced``: a newer pair took its
    place; ``dropped_stale``: too old when the worker was free), refused input
    (``stamps_backwards``), ``time_reset`` and ``ir_reordered``.
    """

    def __init__(self, slop_ns: int, ir_timeout_ns: int, stale_ns: int,
                 max_wait_ns: int = MAX_IR_WAIT_NS,
                 clock: Callable[[], int] = time.monotonic_ns,
                 fuse_despite_clock_offset: bool = False) -> None:
        self.slop_ns = slop_ns
        self.ir_timeout_ns = ir_timeout_ns
        self.stale_ns = stale_ns
        self.max_wait_ns = max_wait_ns
        self.fuse_despite_clock_offset = fuse_despite_clock_offset
        self._clock = clock  # the clock of Frame.received_ns
        self.counters: Counter[str] = Counter()
        self._lock = threading.Condition()
        self._ir: list[Frame] = []  # sorted by stamp, at most IR_HISTORY
        self._waiting: deque[Frame] = deque()  # RGB frames without a partner yet, by stamp
        self._pending: Pair | None = None
        self._newest_offered_ns: int | None = None
        self._last_rgb_ns: int | None = None
        self._last_ir_received_ns: int | None = None
        self._last_ir_stamp_ns: int | None = None  # of the IR frame received last
        self._created_ns = clock()  # IR counts as silent only ir_timeout after this
        # Per stream, in receipt order: (receipt time, receipt lag, stamp).
        self._recent: dict[str, deque[tuple[int, int, int]]] = {
            s: deque(maxlen=RECENT_FRAMES) for s in ("rgb", "ir")}
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
            self._note("rgb", frame)
            limit, clock_offset = self._clock_check()
            partner, apart = self._partner(frame, limit)
            if partner is not None and not apart:
                self._offer(Pair(frame, partner))
            elif (clock_offset is not None or self._ir_silent(frame.received_ns)
                  or self._ir_past(frame.stamp_ns)):
                self._offer(self._settle(frame, limit, clock_offset))
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
            self._last_ir_stamp_ns = frame.stamp_ns
            self._note("ir", frame)
            limit, clock_offset = self._clock_check()
            settled = None  # the newest waiting frame this IR frame settles
            while self._waiting:
                rgb = self._waiting[0]
                if (abs(frame.stamp_ns - rgb.stamp_ns) <= self.slop_ns
                        and not _apart(rgb, frame, limit)):
                    pair = Pair(rgb, frame)
                elif clock_offset is not None or frame.stamp_ns > rgb.stamp_ns + self.slop_ns:
                    pair = self._settle(rgb, limit, clock_offset)
                else:
                    break  # older than the remaining waiting frames, or captured apart
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
        plus the difference of the cameras' delivery latencies; positive: the IR clock is
        ahead); None before ``OFFSET_MIN_FRAMES`` frames of each stream."""
        with self._lock:
            return self._stamp_offset()

    def clock_offset_ns(self) -> int | None:
        """`stamp_offset_ns` while it exceeds `offset_limit_ns` (the IR clock is off), else
        None."""
        with self._lock:
            return self._clock_check()[1]

    def offset_limit_ns(self) -> int:
        """The largest stamp offset taken for delivery latencies: ``CLOCK_OFFSET_PERIODS``
        frame periods of the slower camera, at least ``CLOCK_OFFSET_MIN_NS``."""
        with self._lock:
            return self._clock_check()[0]

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
            self._offer(self._settle(expired, *self._clock_check()))

    def _settle(self, rgb: Frame, limit: int, clock_offset: int | None) -> Pair:
        """The pair of an RGB frame that waits no longer: its best partner, or alone."""
        partner, apart = self._partner(rgb, limit)
        if partner is not None and not apart:
            return Pair(rgb, partner)
        if self._ir_silent(self._clock()):
            return Pair(rgb, None, "ir_silent")
        if partner is not None and (clock_offset is None or self.fuse_despite_clock_offset):
            return Pair(rgb, partner)  # lags disagree, no clock offset: one frame delayed
        return Pair(rgb, None, "no_ir_within_slop" if clock_offset is None
                    else "ir_clock_offset")

    def _reset(self) -> None:
        self.counters["time_reset"] += 1
        self._ir.clear()
        self._waiting.clear()
        for recent in self._recent.values():
            recent.clear()
        self._pending = None
        self._newest_offered_ns = self._last_rgb_ns = self._last_ir_stamp_ns = None

    def _note(self, stream: str, frame: Frame) -> None:
        self._recent[stream].append(
            (frame.received_ns, frame.received_ns - frame.stamp_ns, frame.stamp_ns))

    def _partner(self, rgb: Frame, limit: int) -> tuple[Frame | None, bool]:
        """(the IR frame within ``slop`` of ``rgb``, those captured with it first, closest
        stamp next; whether its receipt lag disagrees, i.e. it was captured apart)."""
        near = [f for f in self._ir if abs(f.stamp_ns - rgb.stamp_ns) <= self.slop_ns]
        if not near:
            return None, False
        best = min(near, key=lambda f: (_apart(rgb, f, limit), abs(f.stamp_ns - rgb.stamp_ns)))
        return best, _apart(rgb, best, limit)

    def _ir_silent(self, now_ns: int) -> bool:
        last = self._last_ir_received_ns
        return now_ns - (self._created_ns if last is None else last) > self.ir_timeout_ns

    def _ir_past(self, stamp_ns: int) -> bool:
        """The IR frame received last went past this RGB stamp: no partner will come. (The
        last received, not the newest stamp: after an IR clock steps back, frames stamped
        ahead by the old clock say nothing about the frames to come.)"""
        last = self._last_ir_stamp_ns
        return last is not None and last > stamp_ns + self.slop_ns

    def _clock_check(self) -> tuple[int, int | None]:
        """(offset limit, the stamp offset if beyond it: the IR clock is off, else None)."""
        limit = max(CLOCK_OFFSET_MIN_NS,
                    CLOCK_OFFSET_PERIODS * max(self._period("rgb"), self._period("ir")))
        offset = self._stamp_offset()
        return limit, offset if offset is not None and abs(offset) > limit else None

    def _period(self, stream: str) -> int:
        """Median stamp step of the stream's newest frames in receipt order (0 if unknown)."""
        stamps = [stamp for _, _, stamp in list(self._recent[stream])[-PERIOD_FRAMES:]]
        steps = [b - a for a, b in pairwise(stamps) if b > a]
        return int(statistics.median(steps)) if steps else 0

    def _stamp_offset(self) -> int | None:
        now = self._clock()
        rgb, ir = self._median_lag("rgb", now), self._median_lag("ir", now)
        return None if rgb is None or ir is None else int(rgb - ir)

    def _median_lag(self, stream: str, now_ns: int) -> float | None:
        recent = self._recent[stream]
        if len(recent) < OFFSET_MIN_FRAMES:
            return None
        lags = [lag for received, lag, _ in recent if now_ns - received <= OFFSET_WINDOW_NS]
        if len(lags) < OFFSET_WINDOW_FRAMES:
            lags = [lag for _, lag, _ in list(recent)[-OFFSET_WINDOW_FRAMES:]]
        return statistics.median(lags)


def _apart(rgb: Frame, ir: Frame, limit_ns: int) -> bool:
    """The two frames' receipt lags differ by more than ``limit_ns``: they were captured
    about that far apart, whatever their stamps say."""
    return abs((rgb.received_ns - rgb.stamp_ns) - (ir.received_ns - ir.stamp_ns)) > limit_ns
