"""Multi-object tracking of the engine's detections (no ROS): stable track ids over frames.

`Tracker` wraps roboflow's ``trackers`` ByteTrack (Apache-2.0), fed with the frames' stamps
in seconds, not with frame counts: the Kalman step and the lost-track budget follow elapsed
time, so frames the node drops under overload neither stretch nor shrink the tracks' motion
and lifetimes. On top of the library it keeps what a robot needs from a track: a string id
never reused in the tracker's life (resets included), the class by majority over the track
(ByteTrack associates by box overlap, class-agnostic), optional box smoothing, and whether
the track was last confirmed in a frame fused with IR.

ByteTrack's two stages: detections at or above the score threshold match tracks first and
start new ones; detections down to `LOW_SCORE_RATIO` of it then extend the tracks left
unmatched (a person whose score dips for a frame keeps its track) and are kept only where
they do; the engine must therefore keep scores down to `low_score(threshold)`. Before
association, boxes overlapping a higher-scored one by over `DUPLICATE_IOU` are dropped
(class-agnostic non-maximum suppression): the detector may report one object twice, and
each duplicate would start a track of its own.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import supervision as sv
from trackers import ByteTrackTracker

from .engine import Detections

DUPLICATE_IOU = 0.6  # boxes overlapping more are one object (non-maximum suppression)
LOW_SCORE_RATIO = 0.5  # detections down to this share of the score threshold extend tracks
NOMINAL_RATE_HZ = 10.0  # the Kalman model's unit step; stamps decide the actual steps
LIBRARY_BUFFER_RATE_HZ = 30.0  # the library counts its lost-track buffer in 30 fps frames


@dataclass
class TrackedDetections:
    """One frame's detections after tracking, in the input's order: those at or above the
    score threshold and the lower ones that extend a track, duplicates dropped.

    ``detections``: boxes (smoothed when asked) xyxy in RGB pixels, scores as detected,
    labels the majority class of each detection's track; ``track_ids``: the track's id, ""
    for a detection not (yet) confirmed as a track."""

    detections: Detections
    track_ids: list[str]


@dataclass(frozen=True)
class TrackState:
    """A live track (seen in this frame or still kept while lost): ``ir`` says whether the
    frame that last matched it was fused with IR; ``last_seen_s`` is that frame's stamp."""

    track_id: str
    ir: bool
    last_seen_s: float


@dataclass
class _TrackMemory:
    track_id: str
    votes: Counter
    box: np.ndarray
    ir: bool
    last_seen_s: float


class Tracker:
    """ByteTrack on stamped detections; see the module docstring.

    Args:
        score_threshold: detections below it only extend tracks (see the module docstring).
        lost_time: seconds a track that is no longer detected is kept for re-association.
        smoothing: box smoothing, 0 (the detected box) to <1 (weight of the previous box).
        min_hits: consecutive detections before a track gets an id.
        min_iou: least overlap of a detection with a track's predicted box to match it.
    """

    def __init__(self, score_threshold: float = 0.0, lost_time: float = 1.0,
                 smoothing: float = 0.0, min_hits: int = 2, min_iou: float = 0.1) -> None:
        if lost_time <= 0 or not 0.0 <= smoothing < 1.0 or min_hits < 1:
            raise ValueError(f"tracker needs lost_time > 0, 0 <= smoothing < 1, min_hits >= 1; "
                             f"got {lost_time}, {smoothing}, {min_hits}")
        self.score_threshold = score_threshold
        self.lost_time, self.smoothing = lost_time, smoothing
        self._options = {"min_hits": min_hits, "min_iou": min_iou}
        self._next_id = 1  # never reset: an id is never reused for another object
        self._library: ByteTrackTracker
        self._memory: dict[int, _TrackMemory] = {}
        self._image_size: tuple[int, int] | None = None
        self._last_stamp: float | None = None
        self.reset()

    def reset(self) -> None:
        """Forget every track (a new scene, a new session); ids continue, never reused."""
        self._library = ByteTrackTracker(
            lost_track_buffer=max(1, round(self.lost_time * LIBRARY_BUFFER_RATE_HZ)),
            frame_rate=NOMINAL_RATE_HZ, minimum_consecutive_frames=self._options["min_hits"],
            minimum_iou_threshold=self._options["min_iou"])
        self.set_score_threshold(self.score_threshold)
        self._memory.clear()
        self._image_size = None
        self._last_stamp = None

    def set_score_threshold(self, threshold: float) -> None:
        """Change the threshold at run time; the tracks go on."""
        self.score_threshold = threshold
        self._library.high_conf_det_threshold = threshold
        self._library.track_activation_threshold = threshold

    @staticmethod
    def low_score(threshold: float) -> float:
        """The lowest score the tracker uses under ``threshold``: what the engine keeps."""
        return LOW_SCORE_RATIO * threshold

    def update(self, detections: Detections, stamp_s: float, ir_used: bool,
               image_size: tuple[int, int]) -> TrackedDetections:
        """Track one frame's detections (stamp in seconds, the RGB frame's; ``image_size``
        (height, width)). A new image size or a stamp earlier than the last (a replay
        restarting) resets the tracks first: boxes of another geometry or time line
        cannot continue them."""
        if image_size != self._image_size or (self._last_stamp is not None
                                              and stamp_s < self._last_stamp):
            self.reset()
        self._image_size, self._last_stamp = image_size, stamp_s
        count = len(detections.scores)
        distinct = _without_duplicates(detections)
        tracked = self._library.update(distinct, timestamp=stamp_s)
        boxes = detections.boxes.astype(np.float32).reshape(-1, 4).copy()
        labels = detections.labels.copy()
        track_ids = [""] * count
        for index, library_id in zip(_indices(tracked), tracked.tracker_id, strict=True):
            if library_id < 0:
                continue
            memory = self._remember(int(library_id), boxes[index], int(labels[index]),
                                    ir_used, stamp_s)
            boxes[index], labels[index] = memory.box, memory.votes.most_common(1)[0][0]
            track_ids[index] = memory.track_id
        self._forget_dead_tracks()
        kept = [i for i in sorted(_indices(distinct))
                if track_ids[i] or detections.scores[i] >= self.score_threshold]
        return TrackedDetections(Detections(boxes[kept], detections.scores[kept], labels[kept]),
                                 [track_ids[i] for i in kept])

    def live_tracks(self) -> list[TrackState]:
        """Tracks alive after the last update, matched in it or kept while lost."""
        return [TrackState(m.track_id, m.ir, m.last_seen_s) for m in self._memory.values()]

    def _remember(self, library_id: int, box: np.ndarray, label: int, ir_used: bool,
                  stamp_s: float) -> _TrackMemory:
        memory = self._memory.get(library_id)
        if memory is None:
            memory = _TrackMemory(str(self._next_id), Counter(), box, ir_used, stamp_s)
            self._next_id += 1
            self._memory[library_id] = memory
        memory.votes[label] += 1
        memory.box = self.smoothing * memory.box + (1.0 - self.smoothing) * box
        memory.ir, memory.last_seen_s = ir_used, stamp_s
        return memory

    def _forget_dead_tracks(self) -> None:
        alive = {track.tracker_id for track in self._library.tracks}
        for library_id in set(self._memory) - alive:
            del self._memory[library_id]


def _without_duplicates(detections: Detections) -> sv.Detections:
    """The detections as the library takes them, each carrying its input index, boxes
    overlapping a higher-scored one by over DUPLICATE_IOU dropped."""
    return sv.Detections(
        xyxy=detections.boxes.astype(np.float32).reshape(-1, 4),
        confidence=detections.scores.astype(np.float32),
        class_id=detections.labels.astype(int),
        data={"index": np.arange(len(detections.scores))},
    ).with_nms(threshold=DUPLICATE_IOU, class_agnostic=True)


def _indices(detections: sv.Detections) -> list[int]:
    """Input indices of library detections (reordered by it; an empty result has no data)."""
    return detections.data.get("index", np.zeros(0, int)).tolist()
