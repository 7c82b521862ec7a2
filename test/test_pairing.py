"""FramePairer on a simulated clock: callback order, lost frames, slower IR, clock offsets,
latest pair wins, and no sticky state (the real-DDS versions are in test/ros/test_fusion.py)."""
import random

import pytest

from ivtuning_ros.ros.pairing import MAX_IR_WAIT_NS, Frame, FramePairer

MS = 1_000_000
SLOP = 20 * MS


class Clock:
    def __init__(self) -> None:
        self.now = 0

    def __call__(self) -> int:
        return self.now


def make(clock, **kwargs) -> FramePairer:
    return FramePairer(SLOP, kwargs.pop("ir_timeout", 1000 * MS), kwargs.pop("stale", 500 * MS),
                       clock=clock, **kwargs)


def frame(clock, stamp_ms: float) -> Frame:
    return Frame(int(stamp_ms * MS), None, clock.now)


def run(pairer: FramePairer, clock: Clock, events) -> list:
    """events: (receipt time ms, "rgb"|"ir", stamp ms). The worker takes after each event
    (a fast model); returns the pairs it got."""
    taken = []
    for at_ms, stream, stamp_ms in sorted(events, key=lambda e: e[0]):
        while clock.now < int(at_ms * MS):  # the worker polls while time passes
            clock.now = min(int(at_ms * MS), clock.now + 10 * MS)
            pair = pairer.take(timeout=0)
            if pair is not None:
                taken.append(pair)
        add = pairer.add_rgb if stream == "rgb" else pairer.add_ir
        add(frame(clock, stamp_ms))
        pair = pairer.take(timeout=0)
        if pair is not None:
            taken.append(pair)
    clock.now += 2 * MAX_IR_WAIT_NS
    pair = pairer.take(timeout=0)
    if pair is not None:
        taken.append(pair)
    return taken


def both_cameras(hz: float, seconds: float, ir_first: bool, gap_ms: float = 0.5):
    period = 1000 / hz
    events = []
    for i in range(int(hz * seconds)):
        t = 100 + i * period
        first, second = ("ir", "rgb") if ir_first else ("rgb", "ir")
        events += [(t + 2, first, t), (t + 2 + gap_ms, second, t)]
    return events


def test_identical_stamps_fuse_in_either_order_at_every_rate():
    for hz in (5, 10, 30):
        for ir_first in (True, False):
            clock = Clock()
            pairer = make(clock)
            taken = run(pairer, clock, both_cameras(hz, 3, ir_first))
            assert len(taken) == int(hz * 3)
            assert all(p.ir is not None and p.ir.stamp_ns == p.rgb.stamp_ns for p in taken), \
                (hz, ir_first, [p.alone_because for p in taken])


def test_lost_ir_then_lost_rgb_does_not_latch():
    clock = Clock()
    pairer = make(clock)
    events = both_cameras(10, 3, ir_first=False)
    events = [e for e in events if not (e[1] == "ir" and e[2] == 100 + 5 * 100)]  # lost IR
    events = [e for e in events if not (e[1] == "rgb" and e[2] == 100 + 7 * 100)]  # lost RGB
    taken = run(pairer, clock, events)
    alone = [p.rgb.stamp_ns // MS for p in taken if p.ir is None]
    assert alone == [600]  # only the frame whose IR was lost
    assert all(p.alone_because == "no_ir_within_slop" for p in taken if p.ir is None)
    assert len(taken) == 29


def test_slow_thermal_camera_fuses_every_rgb_frame_with_a_partner():
    rng = random.Random(0)
    events = [(100 + i * 1000 / 30 + 3, "rgb", 100 + i * 1000 / 30) for i in range(150)]
    ir_stamps = []
    for i in range(43):
        stamp = 100 + i * 1000 / 8.7 + rng.uniform(-5, 5)
        if rng.random() < 0.1:
            continue  # 10% lost
        ir_stamps.append(stamp)
        events.append((stamp + 40, "ir", stamp))  # thermal frames arrive 40 ms late
    clock = Clock()
    pairer = make(clock)
    taken = run(pairer, clock, events)
    has_partner = [p for p in taken
                   if any(abs(s * MS - p.rgb.stamp_ns) <= SLOP for s in ir_stamps)]
    assert len(taken) > 60  # RGB frames settled together by one late IR frame: newest wins
    assert len(has_partner) > 20
    assert all(p.ir is not None for p in has_partner)
    reasons = {p.alone_because for p in taken if p.ir is None}
    assert reasons == {"no_ir_within_slop"}


def test_clock_offset_is_named_estimated_and_heals():
    clock = Clock()
    pairer = make(clock)
    events = []
    for i in range(60):
        t = 100 + i * 100
        offset = 3000 if i < 40 else 0  # IR clock 3 s ahead, then fixed
        events += [(t + 2, "rgb", t), (t + 3, "ir", t + offset)]
    taken = run(pairer, clock, events)
    early = taken[10:40]
    assert all(p.ir is None and p.alone_because == "ir_clock_offset" for p in early)
    assert all(p.ir is not None for p in taken[-10:])


def test_offset_estimate():
    clock = Clock()
    pairer = make(clock)
    run(pairer, clock, [(100 + i * 100 + 2, s, 100 + i * 100 + (250 if s == "ir" else 0))
                        for i in range(10) for s in ("rgb", "ir")])
    assert abs(pairer.stamp_offset_ns() - 250 * MS) < MS


def test_ir_silent_runs_alone_without_waiting():
    clock = Clock()
    pairer = make(clock, ir_timeout=300 * MS)
    pairer.add_rgb(frame(clock, 100))  # just started: waits for IR like any frame
    assert pairer.take(timeout=0) is None
    clock.now += 400 * MS  # no IR since the start for longer than ir_timeout
    pairer.add_rgb(frame(clock, 500))
    pair = pairer.take(timeout=0)
    assert pair.rgb.stamp_ns == 500 * MS
    assert pair.ir is None and pair.alone_because == "ir_silent"
    assert not pairer.ir_alive()


def test_a_waiting_frame_does_not_hold_back_newer_ones_and_latest_wins():
    clock = Clock()
    pairer = make(clock)
    pairer.add_ir(frame(clock, 0))
    for stamp in (100, 133, 166):  # three RGB frames waiting for IR (busy worker)
        clock.now += 33 * MS
        pairer.add_rgb(frame(clock, stamp))
    clock.now += 5 * MS
    pairer.add_ir(frame(clock, 166))  # settles the newest; the older ones are superseded
    pair = pairer.take(timeout=0)
    assert pair.rgb.stamp_ns == 166 * MS and pair.ir is not None
    assert pairer.take(timeout=0) is None
    assert pairer.counters["dropped_replaced"] == 2


def test_reordered_ir_is_used_and_stale_pairs_are_dropped():
    clock = Clock()
    pairer = make(clock)
    pairer.add_ir(frame(clock, 200))
    pairer.add_ir(frame(clock, 100))  # arrived late, out of order
    assert pairer.counters["ir_reordered"] == 1
    pairer.add_rgb(frame(clock, 100))
    assert pairer.take(timeout=0).ir.stamp_ns == 100 * MS
    pairer.add_rgb(frame(clock, 200))
    clock.now += 600 * MS
    assert pairer.take(timeout=0) is None
    assert pairer.counters["dropped_stale"] == 1


def test_backwards_rgb_refused_and_loop_resets():
    clock = Clock()
    pairer = make(clock)
    assert pairer.add_rgb(frame(clock, 5000))
    assert not pairer.add_rgb(frame(clock, 4900))
    assert pairer.counters["stamps_backwards"] == 1
    assert pairer.add_rgb(frame(clock, 100))  # a bag loop
    assert pairer.counters["time_reset"] == 1


def feed(pairer: FramePairer, clock: Clock, events) -> list:
    """`run` without the final flush: the worker takes every 10 ms while time passes."""
    taken = []
    for at_ms, stream, stamp_ms in sorted(events, key=lambda e: e[0]):
        while clock.now < int(at_ms * MS):
            clock.now = min(int(at_ms * MS), clock.now + 10 * MS)
            pair = pairer.take(timeout=0)
            if pair is not None:
                taken.append(pair)
        (pairer.add_rgb if stream == "rgb" else pairer.add_ir)(frame(clock, stamp_ms))
    return taken


def test_no_false_clock_offset_at_5_hz_rgb_and_8_7_hz_ir_with_drops():
    # One clock, no offset; thermal frames jitter, arrive 30 ms late, 10% lost; RGB loses 5%.
    rng = random.Random(1)
    events, ir_stamps = [], []
    for i in range(150):  # 30 s of RGB
        if rng.random() >= 0.05:
            events.append((100 + i * 200 + 3, "rgb", 100 + i * 200))
    for i in range(261):  # 30 s of IR
        stamp = 100 + i * 1000 / 8.7 + rng.uniform(-5, 5)
        if rng.random() >= 0.1:
            ir_stamps.append(stamp)
            events.append((stamp + 30, "ir", stamp))
    clock = Clock()
    pairer = make(clock)
    taken = run(pairer, clock, events)
    reasons = [p.alone_because for p in taken if p.ir is None]
    assert "ir_clock_offset" not in reasons, reasons.count("ir_clock_offset")
    has_partner = [p for p in taken
                   if any(abs(s * MS - p.rgb.stamp_ns) <= SLOP for s in ir_stamps)]
    assert len(has_partner) > 30
    assert all(p.ir is not None for p in has_partner), \
        f"{sum(p.ir is not None for p in has_partner)} of {len(has_partner)} fused"
    assert abs(pairer.stamp_offset_ns() + 27 * MS) < 10 * MS  # RGB 3 ms late, IR 30 ms
    assert pairer.clock_offset_ns() is None


def offset_cameras(start_ms: float, seconds: float, offset_ms: float, ir_first: bool):
    """Both cameras at 10 Hz, one clock apart from ``offset_ms`` added to the IR stamps."""
    events = []
    for i in range(int(seconds * 10)):
        t = start_ms + i * 100
        events += [(t + (2 if ir_first else 3), "ir", t + offset_ms),
                   (t + (3 if ir_first else 2), "rgb", t)]
    return events


@pytest.mark.parametrize("offset_ms", [1000, -1000, 3000, -3000])
@pytest.mark.parametrize("ir_first", [True, False])
def test_ir_clock_offset_is_declared_and_heals_within_half_a_second(offset_ms, ir_first):
    clock = Clock()
    pairer = make(clock)
    healthy = feed(pairer, clock, offset_cameras(100, 2, 0, ir_first))
    assert healthy[5:] and all(p.ir is not None for p in healthy[5:])
    off = feed(pairer, clock, offset_cameras(2100, 3, offset_ms, ir_first))
    # From half a second after the onset: RGB-only, named, and no frame fused with an IR
    # frame captured a second or more away (IR ahead: stamps still pair within slop).
    late = [p for p in off if p.rgb.stamp_ns >= 2600 * MS]
    assert late and all(p.ir is None and p.alone_because == "ir_clock_offset" for p in late), \
        [(p.ir is not None, p.alone_because) for p in late]
    assert abs(pairer.clock_offset_ns() - offset_ms * MS) < 10 * MS
    fixed = feed(pairer, clock, offset_cameras(5100, 2, 0, ir_first))
    # Fused again from half a second after the fix (a frame per 100 ms).
    assert all(p.ir is not None for p in fixed if p.rgb.stamp_ns >= 5600 * MS), \
        [(p.rgb.stamp_ns // MS, p.alone_because) for p in fixed]
    assert pairer.clock_offset_ns() is None


def test_pairs_across_a_clock_offset_are_fused_when_asked():
    clock = Clock()
    pairer = make(clock, fuse_despite_clock_offset=True)
    taken = feed(pairer, clock, offset_cameras(100, 3, 1000, ir_first=True))
    assert abs(pairer.clock_offset_ns() - 1000 * MS) < 10 * MS
    late = [p for p in taken if p.rgb.stamp_ns >= 2100 * MS]
    assert late and all(p.ir is not None for p in late)
    assert all(p.ir.stamp_ns == p.rgb.stamp_ns for p in late)  # captured a second apart
