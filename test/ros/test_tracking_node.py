"""Tracking in the node over real DDS, with the demo weights on a synthetic street frame:
Detection2D.id stable across outputs, the tracks' IR state in ~/fusion_state, a reset on
deactivate/activate and on switching tracking at run time; and a synthetic sequence written
as a bag and replayed offline with track ids."""
import argparse
import time
from collections import Counter

import pytest

rclpy = pytest.importorskip("rclpy")

from rclpy.parameter import Parameter  # noqa: E402
from rclpy.parameter_client import AsyncParameterClient  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from ivtuning_ros.commands.replay import add_replay_parser  # noqa: E402
from ivtuning_ros.data.synthetic_sequence import make_sequence  # noqa: E402
from ivtuning_ros.ros.bag import IR_TOPIC, RGB_TOPIC  # noqa: E402
from ivtuning_ros.ros.conversions import fill_image  # noqa: E402
from ivtuning_ros.ros.params import demo_weights  # noqa: E402
from ivtuning_ros.ros.sequence_bag import write_sequence_bag  # noqa: E402

from .harness import NAME, Harness  # noqa: E402
from .test_replay import decoded  # noqa: E402

FRAME = make_sequence(1000, "day", frames=2)[0].sample  # people in view, demo-detectable


@pytest.fixture
def harness(ros_context):
    h = Harness(ros_context, outputs=("detections", "fusion_state"), model_config="",
                checkpoint=str(demo_weights()[0]), score_threshold=0.3, ir_timeout=1.0)
    yield h
    h.close()


def send_frame(harness: Harness):
    """One RGB + IR pair of FRAME stamped now; the detections answering it."""
    stamp = harness.now()
    for publisher, array, encoding in ((harness.rgb_pub, FRAME.rgb, "rgb8"),
                                       (harness.ir_pub, FRAME.ir, "mono16")):
        message = Image()
        message.header.stamp, message.header.frame_id = stamp, "cam"
        fill_image(message, array, encoding)
        publisher.publish(message)

    def answer():
        with harness._lock:
            return next((m for m in harness.received["detections"]
                         if m.header.stamp == stamp), None)

    harness.wait_for(answer, "the detections of the frame sent")
    time.sleep(0.1)  # a camera's cadence
    return answer()


def fusion_state_of(harness: Harness, stamp):
    """The ~/fusion_state message published with the output stamped ``stamp``."""
    def matching():
        with harness._lock:
            return next((m for m in harness.received["fusion_state"]
                         if m.header.stamp == stamp), None)

    harness.wait_for(matching, "the output's fusion state")
    return matching()


def track_ids(message) -> list[str]:
    return [detection.id for detection in message.detections]


def test_ids_stable_across_outputs_reset_on_reactivation_and_switch(harness):
    """One node start (the demo weights take seconds to warm up) for the three behaviours."""
    messages = [send_frame(harness) for _ in range(5)]
    outputs, last = [track_ids(m) for m in messages], messages[-1]
    assert outputs[0] and all(i == "" for i in outputs[0])  # nothing confirmed yet
    tracked = [sorted(ids) for ids in outputs[1:]]
    assert tracked[0] and all(i for i in tracked[0])
    assert all(ids == tracked[0] for ids in tracked)  # the same objects keep their ids
    (tracks,) = [s for s in fusion_state_of(harness, last.header.stamp).status
                 if s.name == "tracks"]
    assert {kv.key: kv.value for kv in tracks.values} == dict.fromkeys(tracked[0], "ir")

    harness.node.trigger_deactivate()
    harness.node.trigger_activate()
    harness.wait_for(lambda: harness.rgb_pub.get_subscription_count() > 0, "resubscribe")
    after = [track_ids(send_frame(harness)) for _ in range(2)]
    assert all(i == "" for i in after[0])  # the tracks were reset
    assert after[1] and not set(after[1]) & set(tracked[0])  # new ids, none reused

    client = AsyncParameterClient(harness.client, NAME)
    assert client.wait_for_services(timeout_sec=5.0)

    def set_tracking(value: bool) -> None:
        future = client.set_parameters([Parameter("tracking", value=value)])
        harness.wait_for(future.done, "set tracking")
        assert future.result().results[0].successful

    set_tracking(False)
    off = send_frame(harness)
    assert off.detections and all(i == "" for i in track_ids(off))
    state = fusion_state_of(harness, off.header.stamp)
    assert [s.name for s in state.status] == ["fusion"]  # no tracks status
    set_tracking(True)
    again = [track_ids(send_frame(harness)) for _ in range(2)]
    assert all(i == "" for i in again[0]) and again[1]
    assert not set(again[1]) & (set(after[1]) | set(tracked[0]))

    future = client.set_parameters([Parameter("class_filter", value="People")])
    harness.wait_for(future.done, "set class_filter")
    filtered = send_frame(harness)  # a new filter restarts the tracks
    assert filtered.detections and all(i == "" for i in track_ids(filtered))
    assert {d.results[0].hypothesis.class_id for d in filtered.detections} == {"0"}


def test_sequence_bag_replays_offline_with_track_ids(tmp_path, capsys):
    sequence = make_sequence(1000, "day", frames=6)
    bag, out = tmp_path / "sequence.mcap", tmp_path / "out.mcap"
    write_sequence_bag(sequence, bag)
    parser = argparse.ArgumentParser()
    add_replay_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["replay", str(bag), "--offline", "--out", str(out),
                              "--checkpoint", str(demo_weights()[0]), "--device", "cpu",
                              "--quiet"])
    assert args.run(args) == 0
    without_ir = sum(frame.sample.ir is None for frame in sequence)
    assert without_ir and f"{without_ir} RGB-only" in capsys.readouterr().out
    records = decoded(out)
    stamps = [m.header.stamp for t, _, m in records if t == RGB_TOPIC]
    assert [s.sec + s.nanosec / 1e9 for s in stamps] == pytest.approx(
        [frame.stamp_s for frame in sequence])
    assert sum(t == IR_TOPIC for t, _, _ in records) == len(sequence) - without_ir
    outputs = [m for t, _, m in records if t == f"/{NAME}/detections"]
    assert len(outputs) == len(sequence)
    seen = Counter(d.id for m in outputs for d in m.detections if d.id)
    assert seen and max(seen.values()) >= len(sequence) // 2  # a track through the sequence
