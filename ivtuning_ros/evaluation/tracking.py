"""Tracking evaluation (``ivtuning eval --tracking``): the engine and the `Tracker` on
synthetic sequences with ground-truth identities (`data.synthetic_sequence`), scored with
the CLEAR (MOTA), Identity (IDF1) and HOTA metrics of roboflow's ``trackers`` evaluator
(a port of TrackEval), per condition, with IR and RGB-only.

Scoring is class-agnostic, as MOT benchmarks score one class: every confirmed track is
matched to the ground truth by box IoU (0.5 for CLEAR and Identity; HOTA averages over
IoU 0.05-0.95). Detections not confirmed as a track (no id yet) are not the tracker's output.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm
from trackers.eval import (
    aggregate_clear_metrics,
    aggregate_hota_metrics,
    aggregate_identity_metrics,
    box_iou,
    compute_clear_metrics,
    compute_hota_metrics,
    compute_identity_metrics,
)

from ..data.synthetic_sequence import SequenceFrame, make_sequence
from ..ros.overlay import draw_overlay
from ..runtime import Engine
from ..runtime.tracking import TrackedDetections, Tracker

MODES = ("ir", "rgb_only")
STRIP_FRAMES = 5
STRIP_COLOURS = 96
REPORTED = ("MOTA", "IDF1", "HOTA", "IDSW", "CLR_Re", "CLR_Pr")


@dataclass
class TrackedFrame:
    """Ground truth and tracker output of one frame, for scoring: boxes xyxy in pixels."""

    gt_ids: np.ndarray
    gt_boxes: np.ndarray
    track_ids: np.ndarray
    track_boxes: np.ndarray


@dataclass
class SequenceRun:
    frames: list[TrackedFrame] = field(default_factory=list)
    outputs: list[TrackedDetections] = field(default_factory=list)
    model_ms: list[float] = field(default_factory=list)
    tracker_ms: list[float] = field(default_factory=list)


def track_sequence(engine: Engine, sequence: Sequence[SequenceFrame], use_ir: bool,
                   tracker: Tracker) -> SequenceRun:
    """Run ``engine`` (with the sequence's IR where it has some and ``use_ir``) and
    ``tracker`` on every frame, stamped as in the sequence; time both."""
    run = SequenceRun()
    tracker.reset()
    for frame in sequence:
        sample = frame.sample
        ir = sample.ir if use_ir else None
        start = time.perf_counter()
        result = engine.infer(sample.rgb, ir, sample.homography)
        middle = time.perf_counter()
        output = tracker.update(result.detections, frame.stamp_s, result.ir_used,
                                sample.rgb.shape[:2])
        run.model_ms.append((middle - start) * 1e3)
        run.tracker_ms.append((time.perf_counter() - middle) * 1e3)
        run.outputs.append(output)
        confirmed = [i for i, track in enumerate(output.track_ids) if track]
        run.frames.append(TrackedFrame(
            frame.identities, sample.boxes,
            np.array([int(output.track_ids[i]) for i in confirmed], np.int64),
            output.detections.boxes[confirmed].reshape(-1, 4)))
    return run


def sequence_metrics(frames: Sequence[TrackedFrame]) -> dict[str, dict]:
    """CLEAR, Identity and HOTA metric dicts of one sequence (the evaluator's fields)."""
    gt_ids = [f.gt_ids for f in frames]
    track_ids = [f.track_ids for f in frames]
    similarity = [box_iou(f.gt_boxes, f.track_boxes) for f in frames]
    return {"clear": compute_clear_metrics(gt_ids, track_ids, similarity),
            "identity": compute_identity_metrics(gt_ids, track_ids, similarity),
            "hota": compute_hota_metrics(gt_ids, track_ids, similarity)}


def combined(per_sequence: Sequence[dict[str, dict]]) -> dict[str, float]:
    """The REPORTED values over several sequences (the evaluator's own aggregation)."""
    merged = {**aggregate_clear_metrics([m["clear"] for m in per_sequence]),
              **aggregate_identity_metrics([m["identity"] for m in per_sequence]),
              **aggregate_hota_metrics([m["hota"] for m in per_sequence])}
    return {key: float(merged[key]) for key in REPORTED}


def evaluate_tracking(engine: Engine, conditions: Sequence[str], seeds: Sequence[int],
                      frames: int, tracker: Tracker, progress: bool = True) -> dict:
    """Per condition and mode (``ir``, ``rgb_only``): the REPORTED metrics over the sequences
    of ``seeds``; and the model's and the tracker's time per frame (ms, median)."""
    report: dict = {"conditions": {}, "sequences_per_condition": len(seeds),
                    "frames_per_sequence": frames}
    model_ms, tracker_ms = [], []
    jobs = [(c, s) for c in conditions for s in seeds]
    for condition, seed in tqdm(jobs, desc="tracking", unit="seq", disable=not progress):
        sequence = make_sequence(seed, condition, frames=frames)
        for mode in MODES:
            run = track_sequence(engine, sequence, mode == "ir", tracker)
            model_ms += run.model_ms
            tracker_ms += run.tracker_ms
            report["conditions"].setdefault(condition, {}).setdefault(mode, []).append(
                sequence_metrics(run.frames))
    for modes in report["conditions"].values():
        for mode, per_sequence in modes.items():
            modes[mode] = combined(per_sequence)
    report["model_ms_p50"] = float(np.median(model_ms))
    report["tracker_ms_p50"] = float(np.median(tracker_ms))
    report["tracker_share_of_model"] = report["tracker_ms_p50"] / report["model_ms_p50"]
    return report


def markdown_table(report: dict) -> str:
    """The report as a README table: a row per condition and mode."""
    lines = ["| condition | input | MOTA | IDF1 | HOTA | ID switches | recall | precision |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for condition, modes in report["conditions"].items():
        for mode, m in modes.items():
            lines.append(f"| {condition} | {'RGB + IR' if mode == 'ir' else 'RGB only'} | "
                         f"{m['MOTA']:.3f} | {m['IDF1']:.3f} | {m['HOTA']:.3f} | "
                         f"{m['IDSW']:.0f} | {m['CLR_Re']:.3f} | {m['CLR_Pr']:.3f} |")
    return "\n".join(lines)


def tracking_strip(engine: Engine, tracker: Tracker, seed: int, frames: int,
                   path: str) -> None:
    """A PNG of STRIP_FRAMES evenly spaced frames of the night sequence ``seed``, tracked
    with IR: boxes with track ids, each frame captioned with its time and input."""
    sequence = make_sequence(seed, "night", frames=frames)
    run = track_sequence(engine, sequence, True, tracker)
    picks = np.linspace(1, len(sequence) - 1, STRIP_FRAMES).round().astype(int)
    tiles = []
    for index in picks:
        frame, output = sequence[index], run.outputs[index]
        tile = draw_overlay(_few_colours(frame.sample.rgb), output.detections,
                            list(engine.class_names), None, 0.0, False, True, output.track_ids)
        caption = (f"t={frame.stamp_s - sequence[0].stamp_s:.1f}s "
                   f"{'RGB+IR' if frame.sample.ir is not None else 'RGB only (IR lost)'}")
        cv2.putText(tile, caption, (4, tile.shape[0] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    strip = Image.fromarray(np.hstack(tiles))
    strip.convert("P", palette=Image.Palette.ADAPTIVE, dither=Image.Dither.NONE).save(
        path, optimize=True)


def _few_colours(rgb: np.ndarray) -> np.ndarray:
    """The frame in STRIP_COLOURS colours (a night frame's noise made the PNG 0.9 MB);
    the boxes and labels drawn on it keep theirs in the 256-colour palette."""
    few = Image.fromarray(rgb).quantize(colors=STRIP_COLOURS, dither=Image.Dither.NONE)
    return np.asarray(few.convert("RGB"))
