"""The IR up/silent log (issue 23): rate-limited, yet no transition is hidden: the state the
IR stream ends in is always logged, with the count of changes not logged one by one. The
node is not spun: a simulated clock drives its pairer, its worker's per-frame call and its
diagnostics timer."""
import re
import types

import pytest

rclpy = pytest.importorskip("rclpy")

from ivtuning_ros.ros import node as node_module  # noqa: E402
from ivtuning_ros.ros.node import PerceptionNode  # noqa: E402
from ivtuning_ros.ros.pairing import Frame, FramePairer  # noqa: E402

from .harness import TEST_PARAMETERS  # noqa: E402

MS = 1_000_000


class Logger:
    def __init__(self, clock) -> None:
        self.clock, self.lines = clock, []

    def info(self, message: str) -> None:
        self.lines.append((self.clock.now / 1e9, "info", message))

    def warning(self, message: str) -> None:
        self.lines.append((self.clock.now / 1e9, "warning", message))

    error = warning


@pytest.fixture
def node(ros_context, monkeypatch):
    from rclpy.parameter import Parameter

    node = PerceptionNode(context=ros_context, parameter_overrides=[
        Parameter(k, value=v) for k, v in TEST_PARAMETERS.items()])
    clock = types.SimpleNamespace(now=0)
    node.clock = clock
    monkeypatch.setattr(node_module, "time", types.SimpleNamespace(
        monotonic=lambda: clock.now / 1e9, monotonic_ns=lambda: clock.now))
    node.logger = Logger(clock)
    monkeypatch.setattr(node, "get_logger", lambda: node.logger)
    node._pairer = FramePairer(20 * MS, 400 * MS, 500 * MS, clock=lambda: clock.now)
    yield node
    node.destroy_node()


def simulate(node, ir_up: list[tuple[float, float]], seconds: float,
             rgb_until: float = 1e9) -> None:
    """IR at 10 Hz during the (start, end) spans of ``ir_up`` (s); the worker notes the IR
    state per output (RGB at 10 Hz until ``rgb_until``), the diagnostics timer runs at 1 Hz."""
    clock = node.clock
    for tick in range(int(seconds * 10)):
        clock.now = tick * 100 * MS
        t = tick / 10
        if any(a <= t < b for a, b in ir_up):
            node._pairer.add_ir(Frame(clock.now, None, clock.now))
        if t < rgb_until:
            node._note_ir_state()
        if tick % 10 == 0:
            node._publish_diagnostics()


def states(node) -> list[str]:
    return ["up" if "IR stream up" in m else "silent" for _, _, m in node.logger.lines]


def test_a_short_dropout_logs_silent_and_up(node):
    simulate(node, [(0.0, 3.0), (4.0, 20.0)], 20.0)
    assert states(node) == ["up", "silent", "up"], node.logger.lines


def test_a_flapping_stream_is_rate_limited_and_its_final_state_logged_with_counts(node):
    # Down and up every 1.5 s for 12 s, then up for good; RGB stops before IR returns: the
    # last change is seen by the diagnostics timer alone.
    spans = [(3 * i, 3 * i + 1.5) for i in range(4)] + [(12.0, 40.0)]
    simulate(node, spans, 40.0, rgb_until=11.5)
    lines = node.logger.lines
    assert states(node)[-1] == "up" and lines[-1][0] >= 12.0, lines  # the state it ended in
    for t, _, _ in lines:  # at most two lines in any 10 s
        assert sum(t <= u < t + 10 for u, _, _ in lines) <= 2, lines
    # Every one of the 9 changes is logged or counted in a line.
    counts = [int(re.search(r"\((\d+) changes", m).group(1)) if "changes" in m else 1
              for _, _, m in lines]
    assert sum(counts) == 9, lines
