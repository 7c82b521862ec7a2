"""RGB-IR pairing by approximate time, latest pair wins (no ROS imports).

Camera callbacks only store frames here; the inference worker takes the newest
complete pair when it is free. Nothing queues: a pair replaced before the worker
took it, or too old when the worker takes it, is dropped and counted, so the age
of published results stays bounded however slow the model is.

Rules, with stamps in nanoseconds:
* each RGB frame is paired with the IR frame closest in time within ``slop``;
  if none has arrived yet it waits (at most ``MAX_IR_WAIT_NS`` of receipt time,
  however often newer RGB frames replace it), and an IR frame arriving within
  ``slop`` completes it;
* if IR is silent (nothing received for ``ir_timeout``), RGB frames go on alone
  (RGB-only inference); fusion resumes with the next IR frame;
* if IR frames arrive but none within ``slop`` of an RGB frame (clock offset,
  wrong topic), that RGB frame goes on alone too, counted as ``stamps_apart``,
  and later RGB frames stop waiting until a pair matches again;
* stamps going backwards are refused (``stamps_backwards``); a jump back of
  more than ``TIME_RESET_NS`` (a bag loop, a simulator restart) resets the pairer.
"""
from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TIME_RESET_NS = 1_000_000_000
MAX_IR_WAIT_NS = 100_000_000
IR_HISTORY = 8


@dataclass
class Frame:
    stamp_ns: int
    data: Any
    received_ns: int


@dataclass
class Pair:
    """An RGB frame with its IR partner, or alone with the reason: "ir_silent", "stamps_apart"."""

    rgb: Frame
    ir: Frame | None
    alone_because: str | None = None

    @property
    def stamp_ns(self) -> int:
        return self.rgb.stamp_ns


class FramePairer:
    """Thread-safe pairing state; see the module docstring.

    ``counters`` counts dropped pairs (``dropped_replaced``, ``dropped_stale``) and
    refused input (``stamps_backwards``, ``stamps_apart``).
    """

    def __init__(self, slop_ns: int, ir_timeout_ns: int, stale_ns: int,
                 clock: Callable[[], int] = time.monotonic_ns) -> None:
        self.slop_ns = slop_ns
        self._clock = clock  # the clock of Frame.received_ns
        self.ir_timeout_ns = ir_timeout_ns
        self.stale_ns = stale_ns
        self.counters: Counter[str] = Counter()
        self._lock = threading.Condition()
        self._ir: deque[Frame] = deque(maxlen=IR_HISTORY)
        self._waiting_rgb: Frame | None = None
        self._waiting_since_ns = 0
        self._out_of_sync = False
        self._pending: Pair | None = None
        self._last_rgb_ns: int | None = None
        self._last_ir_received_ns: int | None = None
        self._closed = False

    def add_rgb(self, frame: Frame) -> bool:
        """Store an RGB frame; False if refused (stamp went backwards)."""
        with self._lock:
            if not self._accept_stamp(frame.stamp_ns, self._last_rgb_ns):
                return False
            self._last_rgb_ns = frame.stamp_ns
            partner = self._closest_ir(frame.stamp_ns)
            if partner is not None:
                self._release_waiting()
                self._out_of_sync = False
                self._offer(Pair(frame, partner))
            elif self._ir_silent(frame.received_ns):
                self._release_waiting()
                self._offer(Pair(frame, None, "ir_silent"))
            elif self._out_of_sync or self._ir_passed(frame.stamp_ns):
                self._release_waiting()
                self._offer_apart(frame)
            else:
                if self._waiting_rgb is None:
                    self._waiting_since_ns = frame.received_ns
                else:
                    self.counters["dropped_replaced"] += 1
                self._waiting_rgb = frame
                self._lock.notify_all()
            return True

    def add_ir(self, frame: Frame) -> bool:
        """Store an IR frame; False if refused (stamp went backwards)."""
        with self._lock:
            last = self._ir[-1].stamp_ns if self._ir else None
            if not self._accept_stamp(frame.stamp_ns, last):
                return False
            self._ir.append(frame)
            self._last_ir_received_ns = frame.received_ns
            waiting = self._waiting_rgb
            if waiting is not None:
                if abs(frame.stamp_ns - waiting.stamp_ns) <= self.slop_ns:
                    self._waiting_rgb = None
                    self._out_of_sync = False
                    self._offer(Pair(waiting, frame))
                elif frame.stamp_ns > waiting.stamp_ns + self.slop_ns:
                    self._waiting_rgb = None
                    self._offer_apart(waiting)
            return True

    def ir_alive(self) -> bool:
        with self._lock:
            return not self._ir_silent(self._clock())

    def take(self, timeout: float | None = None) -> Pair | None:
        """The newest pair, waiting up to ``timeout`` s for one; stale pairs are dropped.

        An RGB frame that waited ``MAX_IR_WAIT_NS`` for its IR partner comes out alone.
        """
        deadline = None if timeout is None else self._clock() + int(timeout * 1e9)
        with self._lock:
            while self._pending is None and not self._closed:
                now = self._clock()
                if self._waiting_rgb is not None and \
                        now - self._waiting_since_ns >= MAX_IR_WAIT_NS:
                    waiting, self._waiting_rgb = self._waiting_rgb, None
                    self._offer_apart(waiting)
                    break
                if deadline is not None and now >= deadline:
                    break
                waits = [] if deadline is None else [deadline - now]
                if self._waiting_rgb is not None:
                    waits.append(self._waiting_since_ns + MAX_IR_WAIT_NS - now)
                self._lock.wait(min(waits) / 1e9 if waits else None)
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

    def _release_waiting(self) -> None:
        """A newer RGB frame settles the pairing: the waiting one is superseded."""
        if self._waiting_rgb is not None:
            self.counters["dropped_replaced"] += 1
            self._waiting_rgb = None

    def _offer_apart(self, frame: Frame) -> None:
        self.counters["stamps_apart"] += 1
        self._out_of_sync = True
        self._offer(Pair(frame, None, "stamps_apart"))

    def _offer(self, pair: Pair) -> None:
        if self._pending is not None:
            self.counters["dropped_replaced"] += 1
        self._pending = pair
        self._lock.notify_all()

    def _accept_stamp(self, stamp_ns: int, last_ns: int | None) -> bool:
        if last_ns is None or stamp_ns > last_ns:
            return True
        if last_ns - stamp_ns > TIME_RESET_NS:
            self.counters["time_reset"] += 1
            self._ir.clear()
            self._waiting_rgb = self._pending = None
            self._last_rgb_ns = None
            return True
        self.counters["stamps_backwards"] += 1
        return False

    def _closest_ir(self, stamp_ns: int) -> Frame | None:
        best = min(self._ir, key=lambda f: abs(f.stamp_ns - stamp_ns), default=None)
        if best is None or abs(best.stamp_ns - stamp_ns) > self.slop_ns:
            return None
        return best

    def _ir_silent(self, now_ns: int) -> bool:
        last = self._last_ir_received_ns
        return last is None or now_ns - last > self.ir_timeout_ns

    def _ir_passed(self, stamp_ns: int) -> bool:
        """IR already went past this RGB stamp without a partner: none will come."""
        return bool(self._ir) and self._ir[-1].stamp_ns > stamp_ns + self.slop_ns
