"""The tracker (runtime/tracking.py) on scripted detections: ids through gaps, uneven stamps,
crossings, resets; the overlay's ids; and the synthetic sequences it is measured on."""
import numpy as np
import pytest

from ivtuning_ros.data.synthetic_sequence import make_sequence
from ivtuning_ros.ros.overlay import draw_overlay
from ivtuning_ros.runtime import Detections
from ivtuning_ros.runtime.tracking import Tracker

SIZE = (256, 320)


def boxes_at(*centres, size=(30.0, 60.0), labels=None, scores=None) -> Detections:
    """Detections with boxes of ``size`` (w, h) centred at the given (x, y)."""
    w, h = size
    boxes = np.array([[x - w / 2, y - h / 2, x + w / 2, y + h / 2] for x, y in centres],
                     np.float32).reshape(-1, 4)
    n = len(boxes)
    return Detections(boxes, np.full(n, 0.8, np.float32) if scores is None else scores,
                      np.zeros(n, np.int64) if labels is None else np.array(labels, np.int64))


def ids_of(tracker: Tracker, detections: Detections, stamp: float, ir: bool = True) -> list:
    return tracker.update(detections, stamp, ir, SIZE).track_ids


def test_id_constant_across_the_image_through_a_one_frame_gap():
    tracker = Tracker(lost_time=0.5)
    seen = set()
    for frame in range(30):
        x = 20 + 10 * frame  # crossing the 320-pixel image at 100 px/s (10 Hz)
        detections = boxes_at((x, 128)) if frame != 12 else boxes_at()  # one frame missed
        ids = ids_of(tracker, detections, 10.0 + 0.1 * frame)
        if frame >= 1 and frame != 12:
            seen.update(ids)
    assert seen == {"1"}


def test_id_constant_through_dropped_frames_with_uneven_stamps():
    """Frames dropped under overload: stamps 0.1 to 0.5 s apart, the object moving at a
    constant 150 px/s; the time-scaled motion model keeps predicting where it is."""
    tracker = Tracker(lost_time=1.0)
    stamps = np.cumsum([0.0, 0.1, 0.1, 0.1, 0.4, 0.1, 0.3, 0.1, 0.5, 0.1, 0.2, 0.1])
    ids = [ids_of(tracker, boxes_at((20 + 150 * t, 100), size=(24, 48)), 50.0 + t)
           for t in stamps]
    assert ids[0] == [""]  # not confirmed on its first detection
    assert {i for frame in ids[1:] for i in frame} == {"1"}


def test_frame_counts_alone_would_lose_it():
    """The same motion at frame indices instead of stamps: each gap looks like one frame, the
    predicted box lags, and the id breaks (why the tracker takes stamps)."""
    stamps = np.cumsum([0.0, 0.1, 0.1, 0.1, 0.5, 0.1, 0.5, 0.1, 0.5])
    by_stamp, by_count = Tracker(lost_time=1.0), Tracker(lost_time=1.0)
    stamp_ids, count_ids = set(), set()
    for index, t in enumerate(stamps):
        detections = boxes_at((20 + 80 * t, 100), size=(16, 32))
        stamp_ids.update(ids_of(by_stamp, detections, 50.0 + t))
        count_ids.update(ids_of(by_count, detections, 50.0 + 0.1 * index))
    assert stamp_ids - {""} == {"1"}
    assert len(count_ids - {""}) > 1


def test_two_crossing_objects_keep_their_ids():
    """Two people walking toward each other, passing with overlapping boxes (one hidden for
    a frame at the crossing)."""
    tracker = Tracker(lost_time=0.5)
    tracks = {"left": set(), "right": set()}
    for frame in range(25):
        left, right = 40 + 10 * frame, 280 - 10 * frame
        centres, names = [(left, 120), (right, 130)], ["left", "right"]
        if frame == 12:  # the nearer one hides the other
            centres, names = centres[:1], names[:1]
        ids = ids_of(tracker, boxes_at(*centres), 1.0 + 0.1 * frame)
        for name, track in zip(names, ids, strict=True):
            if frame >= 1:
                tracks[name].add(track)
    assert len(tracks["left"]) == 1 and len(tracks["right"]) == 1
    assert tracks["left"] != tracks["right"]


def test_majority_class_smoothing_and_ir_flag():
    tracker = Tracker(smoothing=0.5)
    labels = [1, 1, 5, 1]  # a car once taken for a truck
    for frame, label in enumerate(labels):
        out = tracker.update(boxes_at((100 + 4 * frame, 100), labels=[label]), 0.1 * frame,
                             ir_used=frame != 3, image_size=SIZE)
    assert out.detections.labels.tolist() == [1]
    detected_x0 = 100 + 4 * 3 - 15
    assert out.detections.boxes[0, 0] < detected_x0  # pulled back toward earlier boxes
    (state,) = tracker.live_tracks()
    assert state.track_id == out.track_ids[0] and state.ir is False
    assert state.last_seen_s == pytest.approx(0.3)


def test_reset_restarts_tracks_and_never_reuses_an_id():
    tracker = Tracker()
    for frame in range(3):
        first = ids_of(tracker, boxes_at((100, 100)), 0.1 * frame)
    tracker.reset()
    assert tracker.live_tracks() == []
    after = [ids_of(tracker, boxes_at((100, 100)), 0.3 + 0.1 * frame) for frame in range(3)]
    assert after[0] == [""] and after[2] != first and after[2] != [""]


def test_new_image_size_or_earlier_stamp_resets():
    tracker = Tracker()
    for frame in range(3):
        ids_of(tracker, boxes_at((100, 100)), 0.1 * frame)
    assert tracker.update(boxes_at((100, 100)), 0.3, True, (512, 640)).track_ids == [""]
    for frame in range(3):
        tracker.update(boxes_at((100, 100)), 0.4 + 0.1 * frame, True, (512, 640))
    assert tracker.update(boxes_at((100, 100)), 0.0, True, (512, 640)).track_ids == [""]


def test_sequence_is_deterministic_with_identities_dropped_frames_and_ir_dropout():
    first = make_sequence(3, "night", frames=20)
    again = make_sequence(3, "night", frames=20)
    assert len(first) == len(again) < 20  # some frames dropped, the same ones
    for a, b in zip(first, again, strict=True):
        assert a.stamp_s == b.stamp_s
        np.testing.assert_array_equal(a.sample.rgb, b.sample.rgb)
        np.testing.assert_array_equal(a.identities, b.identities)
    gaps = np.diff([f.stamp_s for f in first])
    assert gaps.min() == pytest.approx(0.1) and gaps.max() >= 0.2 - 1e-9
    without_ir = [f.stamp_s - 100.0 for f in first if f.sample.ir is None]
    assert without_ir and min(without_ir) >= 0.8 - 1e-9 and max(without_ir) < 1.2
    identities = np.concatenate([f.identities for f in first])
    assert set(identities.tolist()) == {0, 1, 2, 3}
    assert all(len(f.identities) == len(f.sample.boxes) == len(f.sample.labels) for f in first)


def test_sequence_people_move_and_the_car_passes():
    frames = make_sequence(5, "day", frames=40)
    centre = {}
    for frame in frames:
        for identity, box in zip(frame.identities, frame.sample.boxes, strict=True):
            centre.setdefault(int(identity), []).append((box[0] + box[2]) / 2)
    walkers = [np.diff(centre[i]).mean() for i in (0, 1)]
    assert walkers[0] > 0 > walkers[1]  # toward each other
    assert abs(np.diff(centre[3]).mean()) > 2 * max(abs(w) for w in walkers)  # the car
    counts = [len(f.identities) for f in frames]
    assert min(counts) < max(counts)  # someone occluded or out of view some of the time


def test_low_scores_extend_tracks_but_start_none():
    tracker = Tracker(score_threshold=0.5)
    for frame, score in enumerate([0.8, 0.8, 0.8, 0.3, 0.8]):
        detections = boxes_at((60 + 8 * frame, 100), (250, 100),
                              scores=np.array([score, 0.3], np.float32))
        out = tracker.update(detections, 0.1 * frame, True, SIZE)
        if frame >= 1:  # the lone low-score detection at x=250 is never published
            assert out.track_ids == ["1"]
            assert out.detections.scores.tolist() == pytest.approx([score])


def test_duplicate_boxes_of_one_object_make_one_track():
    tracker = Tracker()
    for frame in range(4):
        x = 60 + 8 * frame
        detections = boxes_at((x, 100), (x + 1, 101), scores=np.array([0.8, 0.7], np.float32))
        out = tracker.update(detections, 0.1 * frame, True, SIZE)
    assert out.track_ids == ["1"] and out.detections.scores.tolist() == pytest.approx([0.8])
    assert len(tracker.live_tracks()) == 1


def test_overlay_writes_track_ids():
    image = np.zeros((*SIZE, 3), np.uint8)
    detections = boxes_at((100, 120))
    plain = draw_overlay(image, detections, ["People"], None, 0.0, False, True)
    tracked = draw_overlay(image, detections, ["People"], None, 0.0, False, True, ["42"])
    label_rows = slice(0, 90)  # the label sits above the box (top at y=90)
    assert (tracked[label_rows] != plain[label_rows]).any()
    assert (tracked[90:] == plain[90:]).all()  # the box itself is the same
