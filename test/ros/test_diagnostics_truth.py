"""/diagnostics tells the truth over real DDS: frames that arrive but are all refused are
named with the refusal and its fix (not "IR silent"), and an untrained model says so."""
import time

import pytest

rclpy = pytest.importorskip("rclpy")

from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402

from ivtuning_ros.model import build_model, load_config, save_checkpoint  # noqa: E402
from ivtuning_ros.ros.diagnostics import REFUSAL_RECENT_NS  # noqa: E402
from ivtuning_ros.ros.params import package_dir  # noqa: E402

from .harness import Harness, ir_image, rgb_image  # noqa: E402

SIM_TIME_FIX = ("use_sim_time is set but /clock is not published (the node's clock reads 0): "
                "play the bag with --clock or clear use_sim_time")


def shifted(stamp: Time, seconds: float) -> Time:
    sec, nanosec = divmod(stamp.sec * 10**9 + stamp.nanosec + int(seconds * 1e9), 10**9)
    return Time(sec=sec, nanosec=nanosec)


def report_while(harness: Harness, send, seconds: float = 1.5) -> DiagnosticStatus:
    """The last /diagnostics report after streaming with ``send()`` at 10 Hz for ``seconds``
    (counted, not by stamp: with sim time the node stamps its reports 0)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        send()
        time.sleep(0.1)
    before = harness.count("diagnostics")
    while harness.count("diagnostics") == before:
        assert time.monotonic() < end + 5, "no diagnostics within 5 s"
        send()
        time.sleep(0.1)
    return harness.last("diagnostics").status[0]


@pytest.fixture
def harness_with(ros_context):
    harnesses = []

    def start(**parameters) -> Harness:
        harnesses.append(Harness(ros_context, outputs=("detections",), **parameters))
        return harnesses[-1]

    yield start
    for harness in harnesses:
        harness.close()


def test_sim_time_without_clock_names_the_missing_clock(harness_with):
    harness = harness_with(use_sim_time=True)
    status = report_while(harness, harness.send_pair)
    assert status.level == DiagnosticStatus.WARN, status.message
    assert "rgb_stamp_implausible" in status.message and SIM_TIME_FIX in status.message
    assert "IR silent" not in status.message


def test_ir_stamps_far_off_are_named_not_called_silent(harness_with):
    harness = harness_with(max_stamp_offset=0.5)
    harness.send_and_wait("detections")
    status = report_while(harness, lambda: harness.send_pair(ir_offset_ns=-100 * 10**9))
    assert status.level == DiagnosticStatus.WARN, status.message
    assert "ir_stamp_implausible" in status.message and "IR silent" not in status.message
    assert "max_stamp_offset" in status.message
    values = {kv.key: kv.value for kv in status.values}
    assert values["ir_state"] == "rgb_only (IR refused: ir_stamp_implausible)"


def test_rgb_stamps_far_off_are_a_warning(harness_with):
    harness = harness_with(max_stamp_offset=0.5)
    harness.send_and_wait("detections")

    def send():
        stamp = harness.now()
        harness.rgb_pub.publish(rgb_image(shifted(stamp, -100.0)))
        harness.ir_pub.publish(ir_image(stamp))

    # Refused for longer than RGB's quiet window: the frame accepted above has aged out.
    status = report_while(harness, send, seconds=REFUSAL_RECENT_NS / 1e9 + 0.5)
    assert status.level == DiagnosticStatus.WARN, status.message
    assert "rgb_stamp_implausible" in status.message and "-100" in status.message


UNTRAINED = ("no checkpoint: ivt_tiny_test runs untrained heads and prompter, its detections "
             "are meaningless; set the 'checkpoint' parameter (e.g. the package's "
             "models/ivt_demo.pth) or set allow_untrained true for tests")


def test_an_untrained_model_says_so_until_ir_silence_outranks_it(harness_with):
    harness = harness_with(allow_untrained=False)
    harness.send_and_wait("detections")
    status = report_while(harness, harness.send_pair)
    assert (status.level, status.message) == (DiagnosticStatus.WARN, UNTRAINED)
    status = report_while(harness, lambda: harness.send_pair(ir=False))
    assert status.level == DiagnosticStatus.WARN and "IR silent" in status.message


def test_a_trained_model_is_ok_without_the_opt_out(harness_with, tmp_path):
    config = load_config(package_dir("models") / "ivt_tiny_test.yaml")
    checkpoint = tmp_path / "tiny.pth"
    save_checkpoint(build_model(config), config, checkpoint)
    harness = harness_with(allow_untrained=False, checkpoint=str(checkpoint))
    harness.send_and_wait("detections")
    status = report_while(harness, harness.send_pair)
    assert status.level == DiagnosticStatus.OK, status.message
