"""Rates in /diagnostics: messages over a fixed span, so a burst of queued messages delivered
at once after a stall reads as the messages it holds, not as their arrival spacing."""
from ivtuning_ros.ros.diagnostics import PipelineStats

S = 1_000_000_000  # ns


def stream(stats: PipelineStats, start_ns: int, hz: float, seconds: float) -> int:
    """Frames at ``hz`` from ``start_ns`` for ``seconds``; returns the time of the last."""
    period = int(S / hz)
    times = range(start_ns, start_ns + int(seconds * S), period)
    for t in times:
        stats.arrived("rgb", t)
    return times[-1]


def test_a_burst_after_a_stall_does_not_read_as_a_fast_camera():
    stats = PipelineStats()
    last = stream(stats, 0, 5.0, 5.0)
    burst = last + 6 * S  # the callbacks stalled; DDS delivers its queue at once
    for i in range(5):
        stats.arrived("rgb", burst + i * 1_000_000)
    assert stats.rate("rgb", burst + 5_000_000) <= 5.0


def test_a_steady_camera_reads_its_rate():
    stats = PipelineStats()
    last = stream(stats, 0, 5.0, 20.0)
    assert abs(stats.rate("rgb", last + S // 10) - 5.0) < 0.3


def test_a_new_stream_reads_its_rate_before_the_horizon_fills():
    stats = PipelineStats()
    last = stream(stats, 100 * S, 10.0, 2.0)
    assert abs(stats.rate("rgb", last + S // 20) - 10.0) < 1.0
    assert stats.rate("ir", last) == 0.0


def test_a_fast_stream_is_not_capped_by_the_window():
    stats = PipelineStats()
    last = stream(stats, 0, 120.0, 10.0)
    assert abs(stats.rate("rgb", last) - 120.0) < 5.0
