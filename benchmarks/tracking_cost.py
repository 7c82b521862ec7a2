"""Tracker cost per frame, and as a share of the model's time on the same machine.

The model (the demo weights by default, eager torch on ``--device``) runs once over a
synthetic tracking sequence per condition (``data.synthetic_sequence``: 40 camera frames at
10 Hz, some dropped, IR lost mid-way), its detections kept at the scores the node keeps with
tracking on (half the node's score_threshold). The node's `Tracker` then tracks those
recorded detections ``--repeats`` times (reset between passes), each update timed alone: the
tracker's whole per-frame work (duplicate suppression, ByteTrack, ids, class votes). Target:
the tracker's median under 2% of the model's median. Prints one JSON object on stdout.

    .venv/bin/python benchmarks/tracking_cost.py
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from ivtuning_ros.data import CONDITIONS
from ivtuning_ros.data.synthetic_sequence import make_sequence
from ivtuning_ros.model import load_model
from ivtuning_ros.ros.params import default_values, demo_weights
from ivtuning_ros.runtime import Engine, EngineOptions
from ivtuning_ros.runtime.tracking import Tracker

TARGET_SHARE = 0.02


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", default=str(demo_weights()[0]))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=2000)
    args = parser.parse_args()
    threshold = default_values()["score_threshold"]
    model, config, _ = load_model(None, args.checkpoint)
    engine = Engine(model, config, EngineOptions(
        device=args.device, score_threshold=Tracker.low_score(threshold), max_detections=100))
    engine.warmup()
    recorded, model_ms = [], []
    for condition in CONDITIONS:
        for frame in make_sequence(args.seed, condition, frames=args.frames):
            sample = frame.sample
            start = time.perf_counter()
            result = engine.infer(sample.rgb, sample.ir, sample.homography)
            if engine.device.type == "cuda":
                torch.cuda.synchronize()
            model_ms.append((time.perf_counter() - start) * 1e3)
            recorded.append((result.detections, frame.stamp_s, result.ir_used,
                             sample.rgb.shape[:2]))
    tracker = Tracker(score_threshold=threshold)
    tracker_ms = []
    for _ in range(args.repeats):
        tracker.reset()
        for detections, stamp, ir_used, size in recorded:
            start = time.perf_counter()
            tracker.update(detections, stamp, ir_used, size)
            tracker_ms.append((time.perf_counter() - start) * 1e3)
    model_p50, tracker_p50 = float(np.median(model_ms)), float(np.median(tracker_ms))
    print(json.dumps({
        "model": config.name, "device": str(engine.device), "backend": engine.backend,
        "image": list(recorded[0][3]), "frames": len(recorded),
        "detections_per_frame": float(np.mean([len(d.scores) for d, *_ in recorded])),
        "model_ms_p50": round(model_p50, 2),
        "tracker_ms_p50": round(tracker_p50, 3),
        "tracker_ms_p99": round(float(np.percentile(tracker_ms, 99)), 3),
        "tracker_share_of_model": round(tracker_p50 / model_p50, 4),
        "target_share": TARGET_SHARE, "meets_target": tracker_p50 / model_p50 < TARGET_SHARE,
        "torch_threads": torch.get_num_threads(),
    }, indent=2))


if __name__ == "__main__":
    main()
