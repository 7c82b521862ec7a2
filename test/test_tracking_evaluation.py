"""Tracking evaluation: the scores against motmetrics' reference MOTA and IDF1, and the
`eval --tracking` command with the demo weights on a short sequence."""
import argparse
import json

import motmetrics
import numpy as np
import pytest

from ivtuning_ros.commands.eval import add_eval_parser
from ivtuning_ros.evaluation.tracking import TrackedFrame, combined, sequence_metrics


def box(x: float) -> list[float]:
    return [x, 50.0, x + 20.0, 110.0]


def scripted_frames() -> list[TrackedFrame]:
    """Two objects over 8 frames: a miss, a false positive and an identity switch."""
    frames = []
    for t in range(8):
        gt_ids, gt_boxes = [0, 1], [box(10 + 5 * t), box(200 - 5 * t)]
        track_ids = [7, 3 if t < 5 else 9]  # object 1's track breaks at frame 5
        track_boxes = [box(11 + 5 * t), box(199 - 5 * t)]
        if t == 2:
            track_ids, track_boxes = track_ids[1:], track_boxes[1:]  # object 0 missed
        if t == 6:
            track_ids, track_boxes = [*track_ids, 4], [*track_boxes, box(120)]  # a ghost
        frames.append(TrackedFrame(np.array(gt_ids), np.array(gt_boxes, np.float32),
                                   np.array(track_ids), np.array(track_boxes, np.float32)))
    return frames


def motmetrics_reference(frames: list[TrackedFrame]) -> dict:
    """motmetrics' MOTA, IDF1 and switches; distances 1 - IoU, none beyond IoU 0.5 (its own
    iou_matrix calls np.asfarray, gone in NumPy 2)."""
    accumulator = motmetrics.MOTAccumulator(auto_id=True)
    for frame in frames:
        distances = 1.0 - _iou(frame.gt_boxes, frame.track_boxes)
        distances[distances > 0.5] = np.nan
        accumulator.update(frame.gt_ids.tolist(), frame.track_ids.tolist(), distances)
    summary = motmetrics.metrics.create().compute(accumulator, metrics=["mota", "idf1",
                                                                        "num_switches"])
    return {k: float(summary[k].iloc[0]) for k in ("mota", "idf1", "num_switches")}


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    low = np.maximum(a[:, None, :2], b[None, :, :2])
    high = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(high - low, 0, None).prod(axis=2)
    area = lambda boxes: (boxes[:, 2:] - boxes[:, :2]).prod(axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def test_mota_and_idf1_match_motmetrics():
    frames = scripted_frames()
    ours = combined([sequence_metrics(frames)])
    reference = motmetrics_reference(frames)
    assert ours["MOTA"] == pytest.approx(reference["mota"])
    assert ours["IDF1"] == pytest.approx(reference["idf1"])
    assert ours["IDSW"] == reference["num_switches"] == 1
    assert 0.0 < ours["HOTA"] < 1.0


def test_perfect_tracking_scores_one():
    frames = [TrackedFrame(f.gt_ids, f.gt_boxes, f.gt_ids + 100, f.gt_boxes)
              for f in scripted_frames()]
    scores = combined([sequence_metrics(frames)])
    assert scores["MOTA"] == scores["IDF1"] == pytest.approx(1.0)
    assert scores["HOTA"] == pytest.approx(1.0)


def test_eval_tracking_command_with_the_demo_weights(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_eval_parser(parser.add_subparsers(dest="command"))
    strip = tmp_path / "strip.png"
    args = parser.parse_args(["eval", "--tracking", "--data", "synthetic", "--sequences", "1",
                              "--frames", "3",
                              "--conditions", "night", "--out", str(tmp_path / "eval"),
                              "--strip", str(strip), "--json"])
    assert args.run(args) == 0
    report = json.loads((tmp_path / "eval" / "tracking_report.json").read_text())
    assert json.loads(capsys.readouterr().out) == report
    assert report["model"] == "ivt_demo" and report["score_threshold"] == 0.3
    assert set(report["conditions"]["night"]) == {"ir", "rgb_only"}
    for scores in report["conditions"]["night"].values():
        assert scores["MOTA"] <= 1.0 and 0.0 <= scores["IDF1"] <= 1.0
    assert 0 < report["tracker_ms_p50"] < report["model_ms_p50"]
    assert "| night | RGB + IR |" in (tmp_path / "eval" / "tracking_report.md").read_text()
    assert strip.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
